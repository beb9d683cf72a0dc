#!/usr/bin/env bash
# README command 1: sets up libtorch and the assets, builds the `autointerp` binary and runs the
# offline demo on the embedded default (SmolLM2-135M-Instruct and the State of the Union corpus).
# Extra arguments go to `autointerp demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-libtorch.sh >/dev/null
scripts/fetch-assets.sh >/dev/null
cargo build --release --locked -p autointerp-cli
exec target/release/autointerp demo "$@"

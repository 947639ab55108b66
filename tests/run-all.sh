#!/usr/bin/env bash
# The whole test suite: format and lint checks, then every test of every crate.
# Needs the Rust toolchain; the programs tests drive are installed by install-test-tools.sh
# (cargo-nextest is used when present).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
bash tests/install-test-tools.sh
echo "== [$(date +%T)] cargo fmt --check"
cargo fmt --all -- --check
echo "== [$(date +%T)] cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== [$(date +%T)] each library crate builds on its own (no feature borrowed from the workspace)"
for crate in config discovery watcher webdav parts meta; do
  cargo check -p "wormfs-$crate" --locked
done
echo "== [$(date +%T)] packages for the packaging tests: the release binary, the container image, the .deb, a debootstrap tree"
# Built before the tests (the tests call the same scripts, which then find everything made).
bash packaging/container/build.sh >/dev/null
bash packaging/debian/build.sh >/dev/null
bash packaging/rootfs.sh --image >/dev/null
echo "== [$(date +%T)] tests (with the crash-points feature, for the crash-safety tests)"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --features wormfs-server/crash-points
else
  cargo test --workspace --locked --no-fail-fast --features wormfs-server/crash-points
fi

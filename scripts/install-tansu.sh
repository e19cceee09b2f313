#!/usr/bin/env bash
# Installs the tansu broker (a second, independent Kafka-compatible peer used for volume tests)
# into a cache outside the clone, so later runs and fresh clones on the same machine reuse it.
# Prints the path of the binary on stdout; everything else goes to stderr.
set -euo pipefail

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
CACHE_DIR="${CLUSTERA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clustera}"
ROOT="$CACHE_DIR/tansu-$TANSU_VERSION"
BIN="$ROOT/bin/tansu"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-tansu: cargo is required to build tansu (install Rust with rustup)" >&2
  exit 1
fi

echo "install-tansu: building tansu $TANSU_VERSION into $ROOT (about 8 minutes on 2 cores, once)" >&2
mkdir -p "$CACHE_DIR"
# A lock keeps two concurrent test runs from building it twice.
exec 9>"$CACHE_DIR/tansu.lock"
flock 9
if [ ! -x "$BIN" ]; then
  # Its own target dir, so the workspace's build cache is not disturbed.
  CARGO_TARGET_DIR="$CACHE_DIR/tansu-build" \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$ROOT" >&2
  rm -rf "$CACHE_DIR/tansu-build"
fi
echo "$BIN"

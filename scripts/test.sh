#!/usr/bin/env bash
# The whole test suite: installs what it needs (tansu, into a cache outside the clone), then
# runs formatting, lints and every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies"
# librdkafka builds from source (rdkafka-sys): it needs a C toolchain, make, and OpenSSL headers.
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v make >/dev/null || missing+=(make)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
dpkg -s pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# The CLI's tests compare `clustera consume` with kcat on the same records.
command -v kcat >/dev/null || missing+=(kcat)
# The console's browser tests drive Debian's Chromium headless through chromedriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# clustera-schema's interoperability test runs confluent-kafka's Python serializers in a venv.
command -v python3 >/dev/null || missing+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "test.sh: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
CLUSTERA_PG_BIN="$(scripts/install-postgres.sh)"
export CLUSTERA_PG_BIN
echo "postgres: $CLUSTERA_PG_BIN"
CLUSTERA_TANSU_BIN="$(scripts/install-tansu.sh)"
export CLUSTERA_TANSU_BIN
echo "tansu: $CLUSTERA_TANSU_BIN"
CLUSTERA_SCHEMA_PYTHON="$(scripts/install-python-schema.sh)"
export CLUSTERA_SCHEMA_PYTHON
echo "schema registry reference client: $CLUSTERA_SCHEMA_PYTHON"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
# The process tests run the example binaries; test builds compile examples only as test harnesses.
cargo build --workspace --examples
# Broker tests are heavy on 2 cores; a few at a time keeps timings stable.
cargo test --workspace --all-targets -- --test-threads 2
cargo test --workspace --doc

echo "== python kernels"
# The `clustera` Python package (crates/clustera-py) and its pytest suite on `clustera dev`.
scripts/test-python.sh

echo "== scaffolded kernel"
# `clustera new` must produce a crate that builds and passes its tests against this workspace.
scaffold="$(mktemp -d)"
trap 'rm -rf "$scaffold"' EXIT
# Out of this tree, depending on clustera by git (this clone's commit), as a user's crate would.
cargo run -q -p clustera-cli -- new scaffold-check --path "$scaffold/scaffold-check" \
  --clustera-git "file://$PWD" --clustera-rev "$(git rev-parse HEAD)"
# The same dependency versions as the workspace, and its build cache.
cp Cargo.lock "$scaffold/scaffold-check/"
workspace_target="${CARGO_TARGET_DIR:-$PWD/target}"
(cd "$scaffold/scaffold-check" && CARGO_TARGET_DIR="$workspace_target" cargo test)

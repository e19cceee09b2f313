#!/usr/bin/env bash
# Python kernels (crates/clustera-py): builds and installs the `clustera` Python package the
# way the README says (`pip install ./crates/clustera-py`, maturin from PyPI), into a venv
# cached outside the clone, then runs its pytest suite against `clustera dev`.
#
# The wheel is built with Cargo's dev profile here: it reuses the workspace's debug build,
# where a release build would recompile everything (minutes on 2 cores). The benchmark
# (scripts/bench-python.sh) builds release.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 9)' 2>/dev/null; then
  echo "installing python3 and python3-venv (Python >= 3.9 with venv is needed)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3 python3-venv python3-dev
  python=python3
fi

requirements=crates/clustera-py/tests/requirements.txt
key="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-$(sha256sum "$requirements" | cut -c1-12)"
venv="${CLUSTERA_CACHE_DIR:-$HOME/.cache/clustera}/py-venv-$key"
if [ ! -x "$venv/bin/pytest" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$requirements"
fi
export PATH="$venv/bin:$PATH"

cargo build -q -p clustera-cli
CLUSTERA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/clustera"
export CLUSTERA_BIN

echo "pip install ./crates/clustera-py (dev profile)"
pip install -q --force-reinstall --no-deps --no-build-isolation ./crates/clustera-py \
  --config-settings=build-args="--profile dev"

(cd crates/clustera-py && python -m pytest -q -p no:cacheprovider "$@")

echo "== scaffolded Python kernel"
# `clustera new --python` must write a kernel whose own tests pass.
scaffold="$(mktemp -d)"
trap 'rm -rf "$scaffold"' EXIT
"$CLUSTERA_BIN" new --python scaffold-py --path "$scaffold/scaffold-py"
(cd "$scaffold/scaffold-py" && python -m pytest -q -p no:cacheprovider)

#!/usr/bin/env bash
# Benchmark of Python kernels: the seed-style transform on the Clustera runtime against the
# seed's confluent-kafka loop, same broker, same run (crates/clustera-py/bench/bench.py).
# Builds the `clustera` Python package in release (as `pip install ./crates/clustera-py`
# does) into a venv cached outside the clone, with confluent-kafka for the seed loop.
#   scripts/bench-python.sh [--messages 200000] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CLUSTERA_CACHE_DIR:-$HOME/.cache/clustera}/py-bench-venv"
if [ ! -x "$venv/bin/maturin" ] || ! "$venv/bin/python" -c 'import confluent_kafka, kafka' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q maturin==1.16.0 confluent-kafka==2.16.1 kafka-python==3.0.12
fi
export PATH="$venv/bin:$PATH"
cargo build -q -p clustera-cli
pip install -q --force-reinstall --no-deps --no-build-isolation ./crates/clustera-py
exec python crates/clustera-py/bench/bench.py \
  --clustera "${CARGO_TARGET_DIR:-$PWD/target}/debug/clustera" "$@"

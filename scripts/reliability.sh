#!/usr/bin/env bash
# The reliability suite at full scale (R1 to R4 of crates/clustera/tests/reliability.rs):
# churn, membership changes, broker faults and poison, each with exact counts. Writes
# RELIABILITY.md. CI runs the same tests at a reduced scale as part of scripts/test.sh.
# Takes about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

rows="$(mktemp)"
trap 'rm -f "$rows"' EXIT
# R1 runs the transform example as separate processes.
cargo build --release -p clustera --examples
CLUSTERA_RELIABILITY=full CLUSTERA_RELIABILITY_REPORT="$rows" \
  cargo test --release -p clustera --test reliability -- --test-threads 1 --nocapture

{
  echo "# Reliability"
  echo
  echo "Measured by \`scripts/reliability.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, on librdkafka's mock"
  echo "cluster (in-process; R1's kernels are separate processes). Scenarios and the mock's own"
  echo "limits are described below the table; CI runs the same code at a reduced scale."
  echo
  echo "| scenario | scale | setup | inputs | lost | duplicated | stalled partitions | recovery | notes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$rows"
  echo
  cat scripts/reliability-notes.md
} > RELIABILITY.md
echo "wrote RELIABILITY.md"

#!/usr/bin/env bash
# Runs the outbox demo and bench-send with the build of an earlier commit and with the
# current tree's, alternately, on the same machine: figures from different sessions are not
# comparable on a machine whose speed changes from day to day.
#
#   scripts/bench-against.sh <commit> [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:?usage: scripts/bench-against.sh <commit> [rounds]}"
rounds="${2:-2}"
old_tree="$(mktemp -d)/old"
git worktree add -q "$old_tree" "$base"
trap 'git worktree remove --force "$old_tree"' EXIT
(cd "$old_tree" && cargo build -q --release -p clustera-cli)
cargo build -q --release -p clustera-cli
old="$old_tree/target/release/clustera"
new="target/release/clustera"
for round in $(seq "$rounds"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    echo "== $side, round $round"
    "$bin" demo --events 25000 --staged 2>&1 | grep -E '^processor:'
    "$bin" demo --events 10000 --rate 1000 2>&1 | grep -E '^latency'
  done
done
for side in old new; do
  bin=$old; [ "$side" = new ] && bin=$new
  echo "== $side bench-send"
  "$bin" bench-send --rounds 3 2>&1 | grep -E 'median ratio|growth|round [0-9]'
done

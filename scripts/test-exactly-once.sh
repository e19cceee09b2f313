#!/usr/bin/env bash
# Exactly-once against a broker that implements transactions (Apache Kafka 2.5 or later): the
# transform example SIGKILLed five times during 30,000 inputs, and two instances rebalancing,
# checked by a read_committed reader (crates/clustera/tests/exactly_once_kafka.rs).
#
# No such broker can be installed on the development machine (librdkafka's mock cluster and
# tansu 0.6 do not implement transactions' effects; RELIABILITY.md), so this is not part of
# scripts/test.sh. Usage:
#   docker run -d -p 9092:9092 apache/kafka:3.9.0
#   CLUSTERA_TEST_KAFKA=localhost:9092 scripts/test-exactly-once.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CLUSTERA_TEST_KAFKA:-}" ]; then
  echo "test-exactly-once: set CLUSTERA_TEST_KAFKA to the bootstrap address of Apache Kafka 2.5+" >&2
  echo "  (for example: docker run -d -p 9092:9092 apache/kafka:3.9.0; CLUSTERA_TEST_KAFKA=localhost:9092)" >&2
  exit 2
fi
cargo build -p clustera --examples
cargo test -p clustera --test exactly_once_kafka -- --ignored --test-threads 1

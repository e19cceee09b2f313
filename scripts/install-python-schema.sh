#!/usr/bin/env bash
# Installs the reference Schema Registry client (confluent-kafka's Python serializers, with the
# avro and json extras: fastavro, jsonschema, ...) into a virtualenv cached outside the clone.
# clustera-schema's interoperability tests run it to prove that bytes cross both ways.
# Prints the path of the venv's python on stdout; everything else goes to stderr.
set -euo pipefail

CONFLUENT_KAFKA_VERSION="${CONFLUENT_KAFKA_VERSION:-2.16.1}"
CACHE_DIR="${CLUSTERA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clustera}"
VENV="$CACHE_DIR/py-venv-schema-$CONFLUENT_KAFKA_VERSION"
PY="$VENV/bin/python"
STAMP="$VENV/.installed"

if [ -f "$STAMP" ] && [ -x "$PY" ]; then
  echo "$PY"
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "install-python-schema: python3 (3.9 or later, with venv) is required: apt-get install python3 python3-venv" >&2
  exit 1
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/py-venv-schema.lock"
flock 9
if [ ! -f "$STAMP" ]; then
  echo "install-python-schema: installing confluent-kafka $CONFLUENT_KAFKA_VERSION into $VENV (once)" >&2
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >&2; then
    echo "install-python-schema: python3 -m venv failed: apt-get install python3-venv" >&2
    exit 1
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check \
    "confluent-kafka[avro,json]==$CONFLUENT_KAFKA_VERSION" >&2
  "$PY" -c 'from confluent_kafka.schema_registry.avro import AvroSerializer; from confluent_kafka.schema_registry.json_schema import JSONSerializer' >&2
  touch "$STAMP"
fi
echo "$PY"

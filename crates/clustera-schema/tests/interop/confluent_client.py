"""The reference client's side of clustera-schema's interoperability test.

confluent-kafka's own Schema Registry serializers, driven line by line:

    confluent_client.py serialize   avro|json TOPIC SCHEMA_FILE   (stdin: JSON objects, stdout: hex)
    confluent_client.py deserialize avro|json TOPIC [READER_SCHEMA_FILE]  (stdin: hex, stdout: JSON)

SCHEMA_REGISTRY_URL names the registry. Any failure goes to stderr with a non-zero exit.
"""

import json
import os
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> None:
    action, fmt, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    schema_file = sys.argv[4] if len(sys.argv) > 4 else None
    schema = open(schema_file, encoding="utf-8").read() if schema_file else None
    registry = SchemaRegistryClient({"url": os.environ["SCHEMA_REGISTRY_URL"]})
    ctx = SerializationContext(topic, MessageField.VALUE)
    if action == "serialize":
        if fmt == "avro":
            codec = AvroSerializer(registry, schema, conf={"auto.register.schemas": True})
        else:
            codec = JSONSerializer(schema, registry, conf={"auto.register.schemas": True})
        for line in sys.stdin:
            if line.strip():
                print(codec(json.loads(line), ctx).hex(), flush=True)
    elif action == "deserialize":
        if fmt == "avro":
            codec = AvroDeserializer(registry, schema)
        else:
            codec = JSONDeserializer(schema, schema_registry_client=registry)
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(codec(bytes.fromhex(line.strip()), ctx), sort_keys=True), flush=True)
    else:
        raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    main()

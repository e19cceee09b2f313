"""The seed template's loop on confluent-kafka, as the benchmark's baseline: one message at a
time, `process_message(message, producer)`, a synchronous commit after every message that
returned True, outputs produced without waiting for their acknowledgement.

    python seed_loop.py path/to/main.py
"""

import importlib.util
import os
import signal
import sys

from confluent_kafka import Consumer, Producer


class ConsumerRecord:
    """kafka-python's attribute names over a confluent-kafka message, as the seed expects."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")

    def __init__(self, msg):
        self.topic = msg.topic()
        self.partition = msg.partition()
        self.offset = msg.offset()
        self.timestamp = msg.timestamp()[1]
        self.key = msg.key()
        self.value = msg.value()
        self.headers = msg.headers() or []


class KafkaStyleProducer:
    """kafka-python's `send` over confluent-kafka's producer: fire and forget, like the seed."""

    def __init__(self, producer):
        self._producer = producer

    def send(self, topic, value=None, key=None, headers=None, partition=None):
        self._producer.produce(topic, value=value, key=key, headers=headers)
        self._producer.poll(0)

    def flush(self, timeout=None):
        return self._producer.flush(timeout if timeout is not None else -1)


def main():
    path = sys.argv[1]
    spec = importlib.util.spec_from_file_location("main", path)
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)

    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    group = os.environ.get("KAFKA_CONSUMER_GROUP", f"{kernel.KERNEL_NAME}-consumer-group")
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": os.environ.get("KAFKA_GROUP_PROTOCOL", "classic"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": int(os.environ.get("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "500")),
    })
    producer = Producer({"bootstrap.servers": bootstrap}) if kernel.OUTPUT_TOPIC else None
    out = KafkaStyleProducer(producer) if producer else None
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([os.environ.get("KAFKA_TOPIC", kernel.DEFAULT_TOPIC)])
    try:
        while running:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if kernel.process_message(ConsumerRecord(msg), out):
                consumer.commit(message=msg, asynchronous=False)
    finally:
        if producer:
            producer.flush(10)
        consumer.close()


if __name__ == "__main__":
    main()

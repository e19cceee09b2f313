"""A seed-style kernel with every outcome, keyed by the message's value."""

import json
from typing import Any, Optional

import clustera

KERNEL_NAME = "flaky"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = "template-output"

_attempts: dict = {}


def process_message(message: Any, producer: Optional[Any] = None) -> bool:
    value = message.value.decode()
    seen = _attempts[value] = _attempts.get(value, 0) + 1
    if value == "fail":
        return False
    if value == "boom":
        raise ValueError("boom: cannot handle this")
    if value == "skip":
        raise clustera.Skip("nothing to do")
    if value == "dead":
        raise clustera.DeadLetter("bad data")
    if value == "dead-returned":
        return clustera.DeadLetter("returned, not raised")
    if value == "retry-once" and seen == 1:
        return clustera.Retry("first attempt", after=0.01)
    if value == "boom-once" and seen == 1:
        raise RuntimeError("first attempt fails")
    if value == "not-json":
        message.json()  # clustera.DecodeError: dead-lettered at once
    producer.send(OUTPUT_TOPIC, value=json.dumps({"value": value, "attempts": seen}).encode(),
                  key=message.key)
    return True

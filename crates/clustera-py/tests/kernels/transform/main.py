"""Transform kernel, written the seed template's way (README "Transform Kernel")."""

import json
import logging
import os
from datetime import datetime
from typing import Any, Optional

from kafka import KafkaProducer

KERNEL_NAME = "transform"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = "template-output"

logging.basicConfig(level=os.getenv("LOG_LEVEL", "WARNING"))
logger = logging.getLogger(KERNEL_NAME)


def transform_logic(input_data: dict) -> dict:
    return {k: v.upper() if isinstance(v, str) else v for k, v in input_data.items()}


def process_message(message: Any, producer: Optional[KafkaProducer] = None) -> bool:
    input_data = json.loads(message.value.decode('utf-8'))

    # Transform data
    output_data = {
        "processed_at": datetime.now().isoformat(),
        "original_id": input_data.get("id"),
        "transformed": transform_logic(input_data)
    }

    # Send to output topic
    if producer:
        producer.send(
            OUTPUT_TOPIC,
            value=json.dumps(output_data).encode('utf-8'),
            key=message.key
        )

    return True


def main():
    raise SystemExit("the seed's own kafka-python loop: not used under `python -m clustera run`")


if __name__ == "__main__":
    main()

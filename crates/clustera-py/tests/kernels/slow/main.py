"""A seed-style transform that takes 20 ms per message (a slow dependency), so a test can
watch commits and outputs while it runs."""

import json
import time
from typing import Any, Optional

KERNEL_NAME = "slow"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = "template-output"


def process_message(message: Any, producer: Optional[Any] = None) -> bool:
    time.sleep(0.02)
    data = json.loads(message.value)
    producer.send(OUTPUT_TOPIC, value=json.dumps({"original_id": data["id"]}).encode(),
                  key=message.key)
    return True

"""Enrichment kernel, written the seed template's way (README "Enrichment Kernel"): adds
the user's details from an HTTP service (USER_SERVICE_URL)."""

import json
import logging
import os
import urllib.request
from typing import Any, Optional

from kafka import KafkaProducer

KERNEL_NAME = "enrichment"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = "template-output"

logger = logging.getLogger(KERNEL_NAME)


def fetch_user_details(user_id: str) -> dict:
    url = f"{os.environ['USER_SERVICE_URL']}/users/{user_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def process_message(message: Any, producer: Optional[KafkaProducer] = None) -> bool:
    try:
        data = json.loads(message.value.decode('utf-8'))

        # Enrich with external data
        enriched = {
            **data,
            "user_details": fetch_user_details(data["user_id"]),
        }

        # Forward enriched message
        if producer:
            producer.send(OUTPUT_TOPIC, value=json.dumps(enriched).encode('utf-8'))

        return True
    except OSError as e:
        # Temporary failure (the user service is down): retry
        logger.error(f"Temporary failure: {e}")
        return False

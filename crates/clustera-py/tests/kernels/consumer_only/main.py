"""Consumer-only kernel, written the seed template's way (README "Consumer-Only Kernel"):
stores each event in a database (SQLite at EVENTS_DB)."""

import json
import logging
import os
import sqlite3
from typing import Any, Optional

from kafka import KafkaProducer

KERNEL_NAME = "consumer-only"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = None  # Disable producer

logger = logging.getLogger(KERNEL_NAME)


def store_in_database(data: dict) -> None:
    with sqlite3.connect(os.environ["EVENTS_DB"], timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT)")
        # Idempotent: a message delivered again after a crash changes nothing.
        conn.execute(
            "INSERT OR IGNORE INTO events (id, type) VALUES (?, ?)",
            (str(data["id"]), data.get("type")),
        )


def process_message(message: Any, producer: Optional[KafkaProducer] = None) -> bool:
    assert producer is None, "OUTPUT_TOPIC is None: the seed passes no producer"
    data = json.loads(message.value.decode('utf-8'))

    # Process data (e.g., store in database, call API)
    store_in_database(data)

    return True


if __name__ == "__main__":
    raise SystemExit("run with: python -m clustera run main.py")

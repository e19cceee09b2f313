"""The seed-style transform, unchanged, plus a SIGKILL of its own process once it has
processed KILL_AFTER messages: the kill lands mid-stream at the same point on any machine,
with other partitions' calls, outputs and commits in flight."""

import importlib.util
import os
import signal
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "transform_main", Path(__file__).resolve().parent.parent / "transform" / "main.py")
_transform = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_transform)

KERNEL_NAME = _transform.KERNEL_NAME
DEFAULT_TOPIC = _transform.DEFAULT_TOPIC
OUTPUT_TOPIC = _transform.OUTPUT_TOPIC

_kill_after = int(os.environ.get("KILL_AFTER", "0"))
_processed = 0


def process_message(message, producer=None):
    global _processed
    _processed += 1
    if _kill_after and _processed == _kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return _transform.process_message(message, producer)

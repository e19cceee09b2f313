"""Unit tests of kernels without a broker.

:class:`TestDriver` calls a kernel once per message through the same native path the
runtime uses (the same message object, producer or context, and outcome mapping), and
reports what the runtime would do::

    from clustera.testing import TestDriver
    import main

    def test_transform():
        run = TestDriver(main).process(value=b'{"id": 7}', key=b"k")
        assert run.outcome == "ack"
        assert [o.topic for o in run.outputs] == [main.OUTPUT_TOPIC]

The seed's ``unittest.mock`` style (calling ``process_message(Mock(), Mock())`` directly)
keeps working too: the runtime adds nothing a kernel must import.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _clustera
from ._loader import find

Headers = Union[Sequence[Tuple[str, bytes]], Dict[str, bytes], None]


@dataclass
class Output:
    """A record the kernel sent (produced only if the outcome is ``ack``)."""

    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: List[Tuple[str, Optional[bytes]]]
    partition: Optional[int]

    def json(self) -> Any:
        """The value parsed as JSON."""
        import json

        if self.value is None:
            raise ValueError("the output has no value")
        return json.loads(self.value)


@dataclass
class TestRun:
    """What one call decided, as the runtime maps it."""

    __test__ = False  # not a pytest test class

    #: ``"ack"``, ``"retry"``, ``"skip"`` or ``"dead_letter"``.
    outcome: str
    #: The reason of a skip or dead letter.
    reason: Optional[str]
    #: The delay asked for by ``clustera.Retry(after=...)``, in seconds.
    retry_after: Optional[float]
    #: ``"transient"``, ``"unavailable"`` or ``"permanent"`` when the kernel failed.
    error_kind: Optional[str]
    #: The failure's text (for an exception: its type, message and traceback).
    error: Optional[str]
    #: Records sent during the call.
    outputs: List[Output] = field(default_factory=list)
    #: Partial dead letters asked for with ``ctx.dead_letter(reason)``.
    dead_letters: List[str] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        """Whether the outcome is ``ack`` (outputs sent, offset committed)."""
        return self.outcome == "ack"


class TestDriver:
    """Drives a kernel in memory: a seed-style module, a :class:`clustera.Kernel` subclass
    or instance (or ``module`` with ``attribute`` naming one)."""

    __test__ = False

    def __init__(self, kernel: Any, attribute: Optional[str] = None) -> None:
        self._spec = find(kernel, attribute)
        self._offset = 0

    def process(
        self,
        value: Optional[Union[bytes, str]] = None,
        key: Optional[Union[bytes, str]] = None,
        headers: Headers = None,
        topic: Optional[str] = None,
        partition: int = 0,
        offset: Optional[int] = None,
        timestamp: Optional[int] = None,
        attempt: int = 1,
        last_attempt: bool = False,
    ) -> TestRun:
        """Processes one message (on the kernel's first topic unless ``topic`` is given)."""
        spec = self._spec
        if topic is None:
            topic = spec.topics[0] if spec.topics else "test"
        if offset is None:
            offset = self._offset
        self._offset = offset + 1
        if isinstance(value, str):
            value = value.encode()
        if isinstance(key, str):
            key = key.encode()
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        pairs = [(n, v.encode() if isinstance(v, str) else v) for n, v in pairs]
        kind, reason, after, error_kind, error, outputs, dead_letters = _clustera.invoke(
            spec.process,
            spec.style,
            spec.producer,
            spec.name,
            topic,
            partition,
            offset,
            key,
            value,
            pairs,
            timestamp,
            attempt,
            last_attempt,
        )
        return TestRun(
            outcome=kind,
            reason=reason,
            retry_after=after,
            error_kind=error_kind,
            error=error,
            outputs=[Output(*o) for o in outputs],
            dead_letters=list(dead_letters),
        )

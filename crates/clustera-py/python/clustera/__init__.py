"""Python kernels on the Clustera Rust runtime.

A seed-style ``main.py`` (``KERNEL_NAME``, ``DEFAULT_TOPIC``, ``OUTPUT_TOPIC`` and
``process_message(message, producer) -> bool``) runs unchanged with::

    python -m clustera run main.py

New kernels subclass :class:`Kernel`. Either way the Rust runtime consumes, retries,
dead-letters, produces (outputs acknowledged before the input commits), commits, serves
``/metrics`` and ``/healthz`` and shuts down gracefully, configured by the usual ``KAFKA_*``
and ``CLUSTERA_*`` variables.
"""

from typing import Any, Optional

from ._clustera import ConsumerRecord, Context, Producer, SendFuture
from ._kernel import Kernel
from ._outcomes import DeadLetter, DecodeError, Outcome, Retry, Skip, Unavailable

__all__ = [
    "ConsumerRecord",
    "Context",
    "DeadLetter",
    "DecodeError",
    "Kernel",
    "Outcome",
    "Producer",
    "Retry",
    "SendFuture",
    "Skip",
    "Unavailable",
    "run",
]


def run(target: Any, attribute: Optional[str] = None) -> int:
    """Runs a kernel (a :class:`Kernel` subclass or instance, or a seed-style module) until
    SIGINT or SIGTERM; returns the exit status (0, 78 for bad configuration, 1 for a fatal
    error)::

        if __name__ == "__main__":
            sys.exit(clustera.run(MyKernel()))
    """
    from . import _clustera
    from ._loader import find

    spec = find(target, attribute)
    try:
        return _clustera.run(spec.process, spec.name, spec.topics, spec.style, spec.producer)
    except KeyboardInterrupt:
        # The runtime handled the signal (a graceful stop); Python saw it too.
        return 0

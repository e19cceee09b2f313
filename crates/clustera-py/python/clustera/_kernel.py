"""``clustera.Kernel``: the Pythonic way to write a new kernel."""

from typing import Any, ClassVar, Sequence


class Kernel:
    """Subclass it, name it, list its topics and write ``process``::

        class Shout(clustera.Kernel):
            name = "shout"
            topics = ["words"]

            def process(self, msg, ctx):
                text = msg.text()            # not UTF-8: dead-lettered at once
                if not text:
                    raise clustera.Skip("empty")
                ctx.send("shouts", text.upper(), key=msg.key)

    ``process`` may be ``async def``. Returning None or True acknowledges the message (its
    ``ctx.send`` records are sent, and the input commits once they are acknowledged); False
    or ``clustera.Retry`` retries it; ``clustera.Skip``, ``clustera.DeadLetter`` and
    ``clustera.Unavailable`` (raised or returned) are the other outcomes; any other
    exception is retried, then dead-lettered with its traceback.
    """

    #: The kernel's name: consumer group ``<name>-consumer-group``, client id, metrics label.
    name: ClassVar[str] = ""
    #: Topics consumed unless ``KAFKA_TOPIC`` says otherwise.
    topics: ClassVar[Sequence[str]] = ()

    def process(self, msg: Any, ctx: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.process(self, msg, ctx)")

"""clustera.testing.TestDriver and the objects a kernel sees, without a broker."""

import subprocess
import sys

import pytest

import clustera
from clustera.testing import TestDriver
from conftest import KERNELS, load_kernel


@pytest.fixture(scope="module")
def flaky():
    return TestDriver(load_kernel("flaky/main.py"))


def test_seed_transform_through_the_driver():
    main = load_kernel("transform/main.py")
    run = TestDriver(main).process(value=b'{"id": 7, "name": "ann"}', key=b"k")
    assert run.outcome == "ack" and run.acked
    assert [(o.topic, o.key) for o in run.outputs] == [("template-output", b"k")]
    assert run.outputs[0].json()["transformed"] == {"id": 7, "name": "ANN"}


@pytest.mark.parametrize("value, outcome, reason, error_kind", [
    ("fail", "retry", None, None),                       # False
    ("boom", "retry", None, "transient"),                # an exception
    ("skip", "skip", "nothing to do", None),             # raise clustera.Skip
    ("dead", "dead_letter", "bad data", None),           # raise clustera.DeadLetter
    ("dead-returned", "dead_letter", "returned, not raised", None),
    ("not-json", "dead_letter", None, "permanent"),      # msg.json() on bad bytes
    ("ok", "ack", None, None),
])
def test_outcomes(flaky, value, outcome, reason, error_kind):
    run = flaky.process(value=value)
    assert (run.outcome, run.error_kind) == (outcome, error_kind)
    if reason is not None:
        assert run.reason == reason
    assert len(run.outputs) == (1 if outcome == "ack" else 0)


def test_exception_text_carries_type_message_and_traceback(flaky):
    run = flaky.process(value="boom")
    assert run.error.startswith("Transient error: ValueError: boom: cannot handle this")
    assert "Traceback (most recent call last)" in run.error
    assert 'main.py", line' in run.error


def test_retry_with_delay_then_ack(flaky):
    first = flaky.process(value="retry-once")
    assert (first.outcome, first.retry_after) == ("retry", 0.01)
    assert flaky.process(value="retry-once").outcome == "ack"


def test_kernel_class_async_and_context():
    shout = load_kernel("kernel_api/shout.py")
    driver = TestDriver(shout)
    run = driver.process(value="hi", key="k", attempt=3)
    assert run.outcome == "ack"
    assert [(o.topic, o.key, o.value, o.headers) for o in run.outputs] == [
        ("shouts", b"k", b"HI", [("attempt", b"3")])]
    assert driver.process(value="").outcome == "skip"
    bad = driver.process(value=b"\xff")
    assert (bad.outcome, bad.error_kind) == ("dead_letter", "permanent")


class Recorder(clustera.Kernel):
    name = "recorder"
    topics = ["in"]

    def __init__(self):
        self.kept = []
        self.seen = None

    def process(self, msg, ctx):
        self.kept.append((msg, ctx))
        self.seen = {
            "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
            "timestamp": msg.timestamp, "timestamp_type": msg.timestamp_type,
            "key": msg.key, "value": msg.value, "headers": list(msg.headers),
            "ct": msg.headers.get("Content-Type"), "header": msg.header("content-type"),
            "sizes": (msg.serialized_key_size, msg.serialized_value_size),
            "json": msg.json(),
        }
        return True


def test_message_has_kafka_python_attributes_and_is_released():
    kernel = Recorder()
    run = TestDriver(kernel).process(
        value=b'{"a": 1}', key=b"kk", headers=[("content-type", b"application/json")],
        partition=2, offset=41, timestamp=1_700_000_000_000)
    assert run.outcome == "ack", run.error
    assert kernel.seen == {
        "topic": "in", "partition": 2, "offset": 41,
        "timestamp": 1_700_000_000_000, "timestamp_type": 0,
        "key": b"kk", "value": b'{"a": 1}', "headers": [("content-type", b"application/json")],
        "ct": b"application/json", "header": b"application/json",
        "sizes": (2, 8), "json": {"a": 1},
    }
    # After the outcome the message no longer holds its payload, and the context is closed.
    msg, ctx = kernel.kept[0]
    with pytest.raises(RuntimeError, match="outcome is final"):
        msg.value
    with pytest.raises(RuntimeError, match="call that has returned"):
        ctx.send("out", b"late")


def test_a_value_that_is_no_outcome_is_a_clear_error():
    class Confused(clustera.Kernel):
        name = "confused"
        topics = ["in"]

        def process(self, msg, ctx):
            return {"done": True}

    run = TestDriver(Confused()).process(value="x")
    assert (run.outcome, run.error_kind) == ("retry", "transient")
    assert "returned {'done': True} (dict): expected True, False or a clustera outcome" in run.error


class Sender(clustera.Kernel):
    name = "sender"
    topics = ["in"]

    def process(self, msg, ctx):
        ctx.send(msg.text(), value=12)


def test_bad_send_arguments_are_clear_errors():
    run = TestDriver(Sender).process(value="out")
    assert run.outcome == "retry" and run.error_kind == "transient"
    assert "TypeError: value must be bytes, bytearray, str or None, not int" in run.error


def test_seed_none_return_is_an_error():
    module = type(sys)("none_kernel")
    module.KERNEL_NAME, module.DEFAULT_TOPIC, module.OUTPUT_TOPIC = "n", "in", "out"
    module.process_message = lambda message, producer: None
    run = TestDriver(module).process(value="x")
    assert run.outcome == "retry"
    assert "returned None: it must return True (commit) or False (retry)" in run.error


def test_producer_speaks_kafka_python_and_confluent():
    module = type(sys)("both")
    module.KERNEL_NAME, module.DEFAULT_TOPIC, module.OUTPUT_TOPIC = "both", "in", "out"

    def process_message(message, producer):
        assert producer.send("a", value=b"1", key=b"k", headers=[("h", b"v")]).get(timeout=5) is None
        producer.produce("b", b"2", b"k", headers={"h": "v"})
        producer.send("c", b"3", partition=1)
        assert producer.flush() == 0
        return True

    module.process_message = process_message
    run = TestDriver(module).process(value="x")
    assert run.outcome == "ack", run.error
    assert [(o.topic, o.value, o.key, o.headers, o.partition) for o in run.outputs] == [
        ("a", b"1", b"k", [("h", b"v")], None),
        ("b", b"2", b"k", [("h", b"v")], None),
        ("c", b"3", None, [], 1),
    ]


def test_cli_refuses_a_file_that_is_not_a_kernel(tmp_path):
    bad = tmp_path / "main.py"
    bad.write_text("DEFAULT_TOPIC = 'x'\ndef process_message(message, producer):\n    return True\n")
    done = subprocess.run([sys.executable, "-m", "clustera", "run", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "KERNEL_NAME must be a non-empty string" in done.stderr
    missing = subprocess.run([sys.executable, "-m", "clustera", "run", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, timeout=60)
    assert (missing.returncode, missing.stderr.strip()) == (78, f"clustera: {tmp_path / 'nope.py'}: no such file")


def test_cli_reports_bad_configuration_naming_the_variable():
    done = subprocess.run(
        [sys.executable, "-m", "clustera", "run", str(KERNELS / "transform" / "main.py")],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "CLUSTERA_PYTHON_THREADS": "lots",
             "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert done.returncode == 78, done.stderr
    assert "CLUSTERA_PYTHON_THREADS" in done.stderr


class Handlers(clustera.Kernel):
    name = "handlers"
    topics = ["in"]

    def process(self, msg, ctx):
        event = msg.json()
        if event.get("db") == "down":
            raise clustera.Unavailable("database unreachable")
        ctx.send_json("audit", {"id": event["id"]}, key=msg.key)
        if event.get("mail") == "bad":
            ctx.dead_letter("mail handler: invalid address")  # one part fails for good
        return True


def test_partial_dead_letter_unavailable_and_send_json():
    driver = TestDriver(Handlers)
    run = driver.process(value='{"id": 1, "mail": "bad"}', key="k")
    assert run.outcome == "ack"
    assert run.dead_letters == ["mail handler: invalid address"]
    assert [(o.topic, o.key, o.json(), o.headers) for o in run.outputs] == [
        ("audit", b"k", {"id": 1}, [("content-type", b"application/json")])]
    down = driver.process(value='{"id": 2, "db": "down"}')
    assert (down.outcome, down.error_kind, down.outputs) == ("retry", "unavailable", [])
    assert "database unreachable" in down.error


def test_seed_topics_come_from_default_topic_or_topics():
    from clustera._loader import find

    module = type(sys)("multi")
    module.KERNEL_NAME, module.DEFAULT_TOPIC, module.OUTPUT_TOPIC = "multi", "a", None
    module.process_message = lambda message, producer: producer is None
    spec = find(module)
    assert (spec.name, spec.topics, spec.style, spec.producer) == ("multi", ["a"], "seed", False)
    module.TOPICS = ["topic1", "topic2", "topic3"]
    assert find(module).topics == ["topic1", "topic2", "topic3"]
    # OUTPUT_TOPIC None: the seed passes no producer, and so does the runtime.
    assert TestDriver(module).process(value="x").outcome == "ack"


def test_producer_options_the_runtime_cannot_honour_are_refused_by_name():
    module = type(sys)("callbacks")
    module.KERNEL_NAME, module.DEFAULT_TOPIC, module.OUTPUT_TOPIC = "cb", "in", "out"
    module.process_message = lambda m, p: p.produce("out", b"v", on_delivery=print) or True
    run = TestDriver(module).process(value="x")
    assert run.outcome == "retry" and "produce(on_delivery=...) is not supported" in run.error
    module.process_message = lambda m, p: p.send("out", b"v", timestamp_ms=5) and True
    run = TestDriver(module).process(value="x")
    assert run.outcome == "retry" and "send(timestamp_ms=...) is not supported" in run.error

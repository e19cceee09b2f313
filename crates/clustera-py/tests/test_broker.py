"""Python kernels run by `python -m clustera run` against `clustera dev`: the seed's three
patterns unchanged, SIGKILL without loss, retries and dead letters, outputs acknowledged
before commit, metrics and health."""

import json
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import WAIT_SECONDS, wait_for

INPUT = "template-input"
OUTPUT = "template-output"
DLQ = "template-input.dlq"


def events(n, start=0):
    return [(f"user-{i % 97}", json.dumps({"id": i, "type": "signup", "user_id": f"u{i % 13}"}))
            for i in range(start, start + n)]


def total_committed(broker, group):
    return sum(broker.committed(group, INPUT).values())


def test_transform_pattern_runs_unchanged_and_serves_metrics(broker, kernel_factory):
    n = 2_000
    broker.produce(INPUT, events(n))
    k = kernel_factory("transform/main.py", "transform-group", http=True)
    wait_for("every input committed", lambda: total_committed(broker, "transform-group") == n, k)

    outputs = broker.consume(OUTPUT)
    ids = Counter(json.loads(o["value"])["original_id"] for o in outputs)
    assert set(ids) == set(range(n)), "an input without its output"
    assert max(ids.values()) == 1, "an output produced twice without a crash"
    first = next(o for o in outputs if json.loads(o["value"])["original_id"] == 5)
    assert first["key"] == "user-5", "the seed keys outputs by the input's key"
    assert json.loads(first["value"])["transformed"]["type"] == "SIGNUP"

    status, metrics = k.get("/metrics")
    assert status == 200
    acks = [line for line in metrics.splitlines()
            if line.startswith("clustera_messages_total{") and 'outcome="ack"' in line]
    assert acks == [f'clustera_messages_total{{kernel="transform",topic="{INPUT}",outcome="ack"}} {n}']
    assert k.get("/healthz")[0] == 200
    assert k.get("/readyz")[0] == 200
    assert k.terminate() == 0, k.logs()


def test_consumer_only_pattern_gets_no_producer(broker, kernel_factory, tmp_path):
    n = 1_000
    db = tmp_path / "events.db"
    broker.produce(INPUT, events(n))
    k = kernel_factory("consumer_only/main.py", "consumer-only-group", env={"EVENTS_DB": str(db)})
    wait_for("every input committed", lambda: total_committed(broker, "consumer-only-group") == n, k)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events").fetchone() == (n, n)
    # `assert producer is None` in the kernel would have failed every message: none did.
    assert broker.consume(DLQ) == []
    assert k.terminate() == 0, k.logs()


class Users(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self):
        Users.calls += 1
        user = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"id": user, "name": f"name of {user}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_enrichment_pattern_calls_a_real_http_service(broker, kernel_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Users)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        n = 500
        broker.produce(INPUT, events(n))
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # Key ordering (keys of a partition concurrently), which takes no batches.
        k = kernel_factory("enrichment/main.py", "enrichment-group",
                           env={"USER_SERVICE_URL": url, "CLUSTERA_ORDERING": "key"})
        wait_for("every input committed", lambda: total_committed(broker, "enrichment-group") == n, k)
        outputs = [json.loads(o["value"]) for o in broker.consume(OUTPUT)]
        assert sorted(o["id"] for o in outputs) == list(range(n))
        for o in outputs:
            assert o["user_details"] == {"id": o["user_id"], "name": f"name of {o['user_id']}"}
        assert Users.calls == n
        assert k.terminate() == 0, k.logs()
    finally:
        server.shutdown()


def test_sigkill_during_20000_messages_loses_nothing(broker, kernel_factory):
    n = 20_000
    broker.produce(INPUT, events(n))
    # The kernel kills itself (SIGKILL) at its 7,000th message: mid-stream on any machine.
    # The classic protocol with a short session: the mock's KIP-848 groups keep a killed
    # member's partitions for 30 s; here its successor waits out 6 s.
    k = kernel_factory("kill_midway/main.py", "kill-group", env={
        "KILL_AFTER": "7000", "KAFKA_GROUP_PROTOCOL": "classic", "KAFKA_SESSION_TIMEOUT_MS": "6000"})
    assert k.proc.wait(timeout=WAIT_SECONDS) == -9, k.logs()[-5000:]
    at_kill = total_committed(broker, "kill-group")
    assert at_kill < 7_000
    k.env.pop("KILL_AFTER")
    k.start()
    wait_for("every input committed after the restart",
             lambda: total_committed(broker, "kill-group") == n, k)

    ids = Counter(json.loads(o["value"])["original_id"] for o in broker.consume(OUTPUT))
    lost = set(range(n)) - set(ids)
    assert lost == set(), f"{len(lost)} inputs lost their output"
    assert len(ids) == n
    duplicated = sum(c - 1 for c in ids.values())
    # At-least-once: only what was not committed at the kill may be produced again.
    assert duplicated <= n - at_kill
    assert k.terminate() == 0, k.logs()


def test_outcomes_retries_and_dead_letters(broker, kernel_factory):
    values = ["ok-1", "fail", "boom", "skip", "dead", "dead-returned", "retry-once",
              "boom-once", "not-json", "ok-2"]
    # One partition, so the order of outcomes is the order of the values.
    broker.cli("produce", "--topic", INPUT, "--partition", "0", "-",
               input="".join(v + "\n" for v in values))
    k = kernel_factory("flaky/main.py", "flaky-group", env={
        "CLUSTERA_MAX_ATTEMPTS": "3",
        "CLUSTERA_RETRY_INITIAL_MS": "10",
        "CLUSTERA_RETRY_MAX_MS": "50",
    })
    wait_for("every input committed",
             lambda: broker.committed("flaky-group", INPUT).get(0) == len(values), k)

    # Keyless outputs land on random partitions: compare them in the order of their values.
    outputs = sorted((json.loads(o["value"]) for o in broker.consume(OUTPUT)),
                     key=lambda o: o["value"])
    assert outputs == [
        {"value": "boom-once", "attempts": 2},
        {"value": "ok-1", "attempts": 1},
        {"value": "ok-2", "attempts": 1},
        {"value": "retry-once", "attempts": 2},
    ]
    dead = {d["value"]: d["headers"] for d in broker.consume(DLQ)}
    assert sorted(dead) == ["boom", "dead", "dead-returned", "fail", "not-json"]
    # False and exceptions are retried CLUSTERA_MAX_ATTEMPTS times, then dead-lettered.
    assert dead["fail"]["clustera.attempts"] == "3"
    assert dead["boom"]["clustera.attempts"] == "3"
    assert "ValueError: boom: cannot handle this" in dead["boom"]["clustera.error"]
    assert "Traceback" in dead["boom"]["clustera.error"]
    # Outcome exceptions and decode errors are final at once.
    assert dead["dead"]["clustera.attempts"] == "1"
    assert dead["dead"]["clustera.error"] == "bad data"
    assert dead["dead-returned"]["clustera.error"] == "returned, not raised"
    assert dead["not-json"]["clustera.attempts"] == "1"
    assert "not valid JSON" in dead["not-json"]["clustera.error"]
    for headers in dead.values():
        assert headers["clustera.kernel"] == "flaky"
        assert headers["clustera.original.topic"] == INPUT
    assert k.terminate() == 0, k.logs()


def test_outputs_are_acknowledged_before_the_input_commits(broker, kernel_factory):
    n = 2_000
    broker.produce(INPUT, events(n))
    inputs = {(r["partition"], r["offset"]): json.loads(r["value"])["id"]
              for r in broker.consume(INPUT)}
    # Late acknowledgements (failed Produce requests, retried by the producer): a runtime that
    # committed before them would be caught below. One request in flight: the mock cluster
    # checks no sequence numbers for a non-transactional idempotent producer, so a request
    # pipelined after a failed one is written, and librdkafka then takes the failed one's
    # records as delivered (a later sequence was acknowledged) though they never were.
    broker.fault("errors", "--api", "Produce", "--code", "6", "--count", "40")
    k = kernel_factory("slow/main.py", "ack-group",
                       env={"KAFKA_PROPERTY_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION": "1"})
    checked = 0
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        committed = broker.committed("ack-group", INPUT)   # first the commits,
        produced = {json.loads(o["value"])["original_id"] for o in broker.consume(OUTPUT)}
        missing = [(p, o) for (p, o), i in inputs.items()
                   if o < committed.get(p, 0) and i not in produced]
        assert missing == [], f"committed before their outputs were acknowledged: {missing[:10]}"
        checked += 0 < sum(committed.values()) < n
        if sum(committed.values()) == n:
            break
        assert k.alive(), k.logs()[-5000:]
        assert time.monotonic() < deadline, "gave up waiting for every input to commit"
        time.sleep(0.2)
    assert checked >= 2, "too few samples caught the kernel between its first and last commit"
    k.kill()


def test_kernel_class_with_async_process(broker, kernel_factory):
    words = [(None, f"word {i}") for i in range(300)] + [(None, "")]
    broker.produce("words", words)
    k = kernel_factory("kernel_api/shout.py", "shout-group")
    wait_for("every word committed",
             lambda: sum(broker.committed("shout-group", "words").values()) == len(words), k)
    shouts = sorted(o["value"] for o in broker.consume("shouts"))
    # The empty word is skipped (clustera.Skip), every other one shouted once.
    assert shouts == sorted(f"WORD {i}" for i in range(300))
    assert all(o["headers"] == {"attempt": "1"} for o in broker.consume("shouts"))
    assert k.terminate() == 0, k.logs()


def test_a_call_stuck_past_the_drain_timeout_does_not_hang_or_crash_the_exit(broker, kernel_factory):
    broker.produce(INPUT, [(None, "x")] * 4)
    k = kernel_factory("stuck/main.py", "stuck-group", env={"CLUSTERA_DRAIN_TIMEOUT_MS": "1000"})
    wait_for("a call to start", lambda: "call started" in k.logs(), k)
    # SIGTERM: the runtime drains for 1 s, gives up on the stuck call (its message is
    # redelivered to the next owner) and stops; the process must end cleanly.
    assert k.terminate() == 0, k.logs()[-5000:]
    assert "Python call(s) still running after the drain timeout" in k.logs()
    assert sum(broker.committed("stuck-group", INPUT).values()) == 0

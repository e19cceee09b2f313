"""What the Python kernel tests share: the `clustera` binary, its development broker
(`clustera dev`, one per test), kernels as `python -m clustera run` processes, and reading
topics, commits and metrics back."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"
REPO = HERE.parents[2]
# Generous bounds for a loaded 2-core CI machine; a test fails if one is reached.
WAIT_SECONDS = 180


def clustera_bin() -> str:
    path = os.environ.get("CLUSTERA_BIN") or str(REPO / "target" / "debug" / "clustera")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"the clustera binary is missing at {path}: build it with "
            "`cargo build -p clustera-cli` or set CLUSTERA_BIN (scripts/test.sh does this)"
        )
    return path


def load_kernel(relative: str):
    """Imports a kernel file under a unique module name (every seed-style file is `main`)."""
    path = KERNELS / relative
    name = "kernel_" + relative.replace("/", "_").replace(".py", "")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """`clustera dev` on a free port, with its fault-injection API."""

    def __init__(self, topics):
        args = [clustera_bin(), "dev", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]
        for t in topics:
            args += ["--topic", t]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.bootstrap = self.proc.stdout.readline().strip()
        self.control = self.proc.stdout.readline().strip()
        if not self.bootstrap or not self.control.startswith("http://"):
            self.stop()
            pytest.fail("clustera dev did not announce its bootstrap address and control URL")

    def cli(self, *args, input=None, check=True) -> str:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap)
        done = subprocess.run(
            [clustera_bin(), *args], input=input, capture_output=True, text=True,
            env=env, timeout=WAIT_SECONDS,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"clustera {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def produce(self, topic, records):
        """records: (key, value) pairs of str (key may be None)."""
        lines = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in records)
        self.cli("produce", "--topic", topic, "--format", "jsonl", "-", input=lines)

    def consume(self, topic):
        """Every record of the topic, as `clustera consume --format json` prints them."""
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap)
        done = subprocess.run(
            [clustera_bin(), "consume", "--topic", topic, "--offset", "beginning",
             "--exit-at-end", "--format", "json"],
            capture_output=True, text=True, env=env, timeout=WAIT_SECONDS,
        )
        if done.returncode != 0:
            if f"unknown topic {topic}" in done.stderr:
                return []  # nothing produced to it yet
            raise AssertionError(f"clustera consume --topic {topic} failed: {done.stderr}")
        out = done.stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def committed(self, group, topic):
        """Committed offset per partition (partitions without a commit are left out)."""
        out = self.cli("lag", "--group", group, "--topic", topic, check=False)
        commits = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == topic and parts[1].isdigit() and parts[2].isdigit():
                commits[int(parts[1])] = int(parts[2])
        return commits

    def fault(self, *args):
        self.cli("fault", "--control", self.control, *args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def broker():
    b = Broker(["template-input:4", "template-output:4", "words:4", "shouts:4"])
    yield b
    b.stop()


class Kernel:
    """`python -m clustera run FILE` as a process."""

    def __init__(self, broker, kernel_file, group, env=None, http=False):
        self.http_port = free_port() if http else None
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            KAFKA_CONSUMER_GROUP=group,
            KAFKA_GROUP_PROTOCOL="consumer",
            # The mock answers a waiting fetch only when it times out.
            KAFKA_PROPERTY_FETCH_WAIT_MAX_MS="10",
            CLUSTERA_HTTP_ADDR=f"127.0.0.1:{self.http_port}" if http else "off",
            CLUSTERA_LOG_FORMAT="json",
            RUST_LOG="warn",
        )
        self.env.update(env or {})
        self.file = str(KERNELS / kernel_file)
        self.log = open(f"/tmp/clustera-py-test-{group}-{time.time_ns()}.log", "w+")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clustera", "run", self.file],
            env=self.env, cwd=os.path.dirname(self.file),
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT_SECONDS)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return r.status, r.read().decode()

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        self.log.close()


def wait_for(what, condition, kernel=None, seconds=WAIT_SECONDS):
    """Polls `condition` until it returns a truthy value; fails (with the kernel's logs) after
    `seconds`, which only a hang reaches."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if kernel is not None and not kernel.alive():
            pytest.fail(f"kernel exited ({kernel.proc.returncode}) waiting for {what}:\n{kernel.logs()[-5000:]}")
        if time.monotonic() > deadline:
            logs = kernel.logs()[-5000:] if kernel else ""
            pytest.fail(f"gave up waiting for {what} after {seconds} s\n{logs}")
        time.sleep(0.3)


@pytest.fixture
def kernel_factory(broker):
    started = []

    def start(kernel_file, group, env=None, http=False):
        k = Kernel(broker, kernel_file, group, env, http)
        started.append(k)
        return k

    yield start
    for k in started:
        k.close()

"""Benchmark: the same seed-style transform `process_message` on the Clustera runtime
(`python -m clustera run`) and under the seed's own confluent-kafka loop (seed_loop.py), on
one `clustera dev` broker in the same run. Reports each run's rate (inputs committed per
second, from 10% to 100% of the inputs committed, so start-up is left out) and peak RSS, and
the ratios Clustera / seed loop (medians over the rounds).

    scripts/bench-python.sh [--messages 200000] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNEL = HERE.parent / "tests" / "kernels" / "transform" / "main.py"
TOPIC = "template-input"


def cli(clustera, bootstrap, *args, input=None):
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    done = subprocess.run([clustera, *args], input=input, capture_output=True, text=True,
                          env=env, timeout=600)
    if done.returncode != 0:
        sys.exit(f"clustera {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def committed(clustera, bootstrap, group):
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    out = subprocess.run([clustera, "lag", "--group", group, "--topic", TOPIC],
                         capture_output=True, text=True, env=env, timeout=60).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == TOPIC and parts[2].isdigit():
            total += int(parts[2])
    return total


def measure(clustera, bootstrap, name, command, group, n):
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_CONSUMER_GROUP=group,
        KAFKA_GROUP_PROTOCOL="consumer",
        KAFKA_PROPERTY_FETCH_WAIT_MAX_MS="10",
        CLUSTERA_HTTP_ADDR="off",
        RUST_LOG="warn",
    )
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=KERNEL.parent)
    start = None
    deadline = time.monotonic() + 1800
    while True:
        done = committed(clustera, bootstrap, group)
        now = time.monotonic()
        if start is None and done >= n // 10:
            start = (now, done)
        if done >= n:
            break
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode} after {done} of {n}")
        if now > deadline:
            proc.kill()
            sys.exit(f"{name}: only {done} of {n} committed after 30 minutes")
        time.sleep(0.25)
    rate = (n - start[1]) / (now - start[0])
    proc.terminate()
    _, status, usage = os.wait4(proc.pid, 0)
    rss_mib = usage.ru_maxrss / 1024  # Linux: KiB
    print(f"  {name:<9} {rate:>9.0f} msg/s   peak RSS {rss_mib:6.1f} MiB", flush=True)
    return rate, rss_mib


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clustera", default=os.environ.get("CLUSTERA_BIN", "clustera"))
    args = parser.parse_args()

    broker = subprocess.Popen(
        [args.clustera, "dev", "--listen", "127.0.0.1:0", "--topic", f"{TOPIC}:8",
         "--topic", "template-output:4"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    bootstrap = broker.stdout.readline().strip()
    try:
        records = "".join(
            json.dumps({"key": f"user-{i % 1000}",
                        "value": json.dumps({"id": i, "type": "signup", "user": f"u{i % 1000}"})})
            + "\n" for i in range(args.messages))
        cli(args.clustera, bootstrap, "produce", "--topic", TOPIC, "--format", "jsonl", "-",
            input=records)
        print(f"{args.messages} messages on {TOPIC} (8 partitions), kernel {KERNEL}")
        results = {"clustera": [], "seed loop": []}
        for r in range(args.rounds):
            print(f"round {r + 1}")
            results["clustera"].append(measure(
                args.clustera, bootstrap, "clustera",
                [sys.executable, "-m", "clustera", "run", str(KERNEL)], f"bench-clustera-{r}",
                args.messages))
            results["seed loop"].append(measure(
                args.clustera, bootstrap, "seed loop",
                [sys.executable, str(HERE / "seed_loop.py"), str(KERNEL)], f"bench-seed-{r}",
                args.messages))
        rate = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
        rss = {k: statistics.median(x[1] for x in v) for k, v in results.items()}
        print(f"median rate: clustera {rate['clustera']:.0f} msg/s, seed loop "
              f"{rate['seed loop']:.0f} msg/s, ratio {rate['clustera'] / rate['seed loop']:.1f}x "
              "(target >= 5x)")
        print(f"median peak RSS: clustera {rss['clustera']:.1f} MiB, seed loop "
              f"{rss['seed loop']:.1f} MiB, ratio {rss['clustera'] / rss['seed loop']:.2f} "
              "(target <= 1.5)")
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()

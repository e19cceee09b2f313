"""``python -m clustera run main.py``: runs a kernel file on the Rust runtime."""

import argparse
import sys
import traceback

from ._loader import LoadError, from_argument

EXIT_CONFIG = 78


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clustera",
        description="Run Python Kafka kernels on the Clustera runtime.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run a kernel until SIGINT or SIGTERM",
        description=(
            "Runs a seed-style kernel file (KERNEL_NAME, DEFAULT_TOPIC, OUTPUT_TOPIC, "
            "process_message) or a clustera.Kernel, configured by the KAFKA_* and "
            "CLUSTERA_* environment (and .env)."
        ),
    )
    run.add_argument("kernel", help="main.py, main.py:MyKernel, or a module name")
    args = parser.parse_args(argv)

    try:
        spec = from_argument(args.kernel)
    except LoadError as e:
        print(f"clustera: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except ModuleNotFoundError as e:
        # The kernel's own imports (kafka-python for a seed main.py, say) are its dependencies.
        traceback.print_exc()
        print(
            f"clustera: {args.kernel} imports {e.name!r}, which is not installed: install the "
            "kernel's dependencies into this Python (for the seed template: pip install kafka-python)",
            file=sys.stderr,
        )
        return 1

    from . import _clustera

    try:
        return _clustera.run(spec.process, spec.name, spec.topics, spec.style, spec.producer)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

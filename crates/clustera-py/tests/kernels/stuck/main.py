"""A seed-style kernel whose calls never end and hold the GIL (a CPU-bound loop)."""

KERNEL_NAME = "stuck"
DEFAULT_TOPIC = "template-input"
OUTPUT_TOPIC = None

started = 0


def process_message(message, producer=None):
    global started
    started += 1
    print(f"call started for offset {message.offset}", flush=True)
    while True:
        pass

"""Runs ``async def`` kernels: one event loop on a daemon thread, shared by every call.

A runtime thread submits the coroutine and waits for its result; waiting releases the GIL,
so the loop (and other calls) run meanwhile, and coroutines of different partitions overlap
on the loop.
"""

import asyncio
import threading

_loop = None
_lock = threading.Lock()


def _start():
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="clustera-asyncio", daemon=True
            )
            thread.start()
            _loop = loop
    return _loop


def wait(coro):
    """Runs ``coro`` on the shared loop and returns its result (or raises its exception)."""
    loop = _loop or _start()
    return asyncio.run_coroutine_threadsafe(coro, loop).result()

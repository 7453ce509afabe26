"""The event loop that `serve` and `worker` run on: uvloop where it is installed, else asyncio's own.

uvloop (libuv) does the loop's socket and timer work in C; with httptools (which uvicorn picks by
itself when installed) it roughly halves the CPU the event-loop thread spends per ACME request
(docs/performance.md). Both are dependencies of the package; the fallback keeps platforms
without a wheel working.

Before the loop starts, what the process has built so far (Django, the application, about 75,000
objects) is collected once and then frozen (``gc.freeze``): the cyclic garbage collector no longer
scans it, so a full collection under load takes about 2 ms instead of 15-46 ms, during which every
request in flight waits (``gc.callbacks`` in ``serve``, HTTP-01 orders at C=16: two full
collections in 2,000 orders, 4 ms in all; without the freeze one or two in 600, 38-46 ms each).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    gc.collect()
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; only exotic platforms lack a wheel
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

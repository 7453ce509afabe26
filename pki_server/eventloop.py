"""The event loop that `serve` and `worker` run on: uvloop where it is installed, else asyncio's own.

uvloop (libuv) does the loop's socket and timer work in C; with httptools (which uvicorn picks by
itself when installed) it roughly halves the CPU the event-loop thread spends per ACME request
(docs/performance.md). Both are dependencies of the package; the fallback keeps platforms
without a wheel working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; only exotic platforms lack a wheel
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

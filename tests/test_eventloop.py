"""pki_server/eventloop.py: the loop `serve` and `worker` run on."""

from __future__ import annotations

import asyncio
import gc
import weakref

from pki_server import eventloop


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_the_loop_is_uvloop_and_what_was_built_before_it_is_frozen() -> None:
    """Frozen objects are left out of the cyclic collector's scans (its full collections stall every request);
    garbage made before the freeze is collected first, not kept forever."""
    gc.unfreeze()
    gc.disable()  # no collection of its own may free the cycle before eventloop.run does
    node = Node()
    freed = weakref.ref(node)
    del node

    async def main() -> tuple[str, int, bool]:
        return type(asyncio.get_running_loop()).__module__, gc.get_freeze_count(), freed() is None

    try:
        module, frozen, collected = eventloop.run(main())
    finally:
        gc.unfreeze()
        gc.enable()
    assert module.startswith("uvloop")
    assert frozen > 10_000  # the interpreter's, Django's and the test run's own objects
    assert collected


def test_serve_ticks_once_a_second_and_stops_at_once() -> None:
    """uvicorn's main loop woke the idle server ten times a second; serve's ticks once a second (the Date header's
    resolution), and setting should_exit ends it without waiting for the next tick."""
    import time

    import uvicorn

    from pki_server.core.management.commands.serve import _Server

    server = _Server(uvicorn.Config(app=None))
    ticks: list[int] = []

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return bool(server.should_exit)

    server.on_tick = on_tick  # type: ignore[method-assign]

    async def main() -> float:
        loop = asyncio.create_task(server.main_loop())
        await asyncio.sleep(2.5)
        server.should_exit = True
        stopping = time.monotonic()
        await asyncio.wait_for(loop, 5)
        return time.monotonic() - stopping

    stopped_in = asyncio.run(main())
    assert ticks[:3] == [0, 10, 20], ticks  # every tick is a whole second for on_tick: the Date header is renewed
    assert len(ticks) <= 5, ticks  # uvicorn's own: 26
    assert stopped_in < 0.5

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

"""One thread for the database work of ACME requests, the worker and the OCSP/CRL endpoints.

Django's ORM is synchronous, so the event loop hands database work to a thread. channels'
``database_sync_to_async`` (asgiref's ``SyncToAsync`` on its single thread-sensitive executor)
costs 60-100 µs of CPU per hop — context copies, a ``ThreadPoolExecutor`` with its semaphore and
condition variables, chained futures — which on the embedded server was 5 % of all its CPU. Here
a hop is a ``SimpleQueue.put`` and a ``call_soon_threadsafe`` (about 35 µs), on one long-lived
thread, with the same connection hygiene as channels (``close_old_connections`` before and after).

That thread has its own database connection; Django's own views (admin, dashboard) keep using
asgiref's thread. To the code it runs it looks like asgiref's: the job's event loop is recorded
where asgiref records it (so ``async_to_sync`` and the dashboard's live events find it). Code
running inside ``async_to_sync`` (the tests' in-process ASGI client) is sent through channels'
path instead, because there the caller's thread is the one that must run the work (its
transaction, its query counting).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync
from channels.db import database_sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class _Thread:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.serve, name="pki-database", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        pid = os.getpid()
        while True:
            function, args, kwargs, future, loop = self.jobs.get()
            # What asgiref records for a thread it runs sync code in: async_to_sync called by the job runs
            # on the caller's event loop, and the dashboard's events find the loop to be sent from.
            SyncToAsync.threadlocal.main_event_loop = loop
            SyncToAsync.threadlocal.main_event_loop_pid = pid
            try:
                close_old_connections()
                result = function(*args, **kwargs)
            except BaseException as ex:  # everything goes back to the awaiting coroutine
                _deliver(loop, future, None, ex)
            else:
                _deliver(loop, future, result, None)
            try:
                close_old_connections()
            except Exception:  # noqa: S110 - the next job's own call raises it to its caller
                pass


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the caller was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


_thread: _Thread | None = None
_lock = threading.Lock()


def _current() -> _Thread:
    """The thread, started on first use, and again in a forked child (where it is not alive: threads
    do not survive a fork)."""
    global _thread
    thread = _thread
    if thread is None or not thread.thread.is_alive():
        with _lock:
            if _thread is None or not _thread.thread.is_alive():
                _thread = _Thread()
            thread = _thread
    return thread


async def run(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` on the database thread; its result, or its exception raised here."""
    if getattr(AsyncToSync.executors, "current", None) is not None:  # inside async_to_sync: the caller's thread
        return await database_sync_to_async(function)(*args, **kwargs)  # type: ignore[no-any-return]
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _current().jobs.put((function, args, kwargs, future, loop))
    return await future

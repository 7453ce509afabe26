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

On SQLite (the embedded server) there is no hop at all: the job runs right there, on the event
loop's thread (:func:`inline`). A SQLite statement takes tens of microseconds and never waits on
a network, while a hop to a sleeping thread and back cost about 150-200 µs of CPU on a 2-core
machine (two thread wake-ups and two hand-overs of the GIL), seven times per ACME order: with the
jobs inline, the embedded server used 7-9 % less CPU per order and served 13 % more orders a
second at 16 concurrent clients (docs/performance.md). What it gives up: while a job runs, or
waits for SQLite's write lock held by another process (a CLI command; up to the connection's
``timeout``), the loop serves nothing else — under the GIL it could do little else meanwhile
anyway. Django refuses ORM calls on a thread with a running event loop, so the loop is marked as
not running for the job's duration; the dashboard's events still find it (:func:`job_loop`).
PostgreSQL keeps the thread: there a statement is a network round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

_local = threading.local()  # .loop: the event loop of the job this thread runs (inline)

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


#: Whether jobs run on the event loop's thread; None: decided by the database (SQLite: yes) on first use.
INLINE: bool | None = None


def inline() -> bool:
    global INLINE
    if INLINE is None:
        INLINE = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    return INLINE


def job_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the job running inline on this thread (for code that must reach it), else None."""
    return getattr(_local, "loop", None)


async def run(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` on the database thread (or inline); its result, or its exception raised here."""
    if getattr(AsyncToSync.executors, "current", None) is not None:  # inside async_to_sync: the caller's thread
        return await database_sync_to_async(function)(*args, **kwargs)  # type: ignore[no-any-return]
    loop = asyncio.get_running_loop()
    if inline():
        return _run_inline(loop, function, *args, **kwargs)
    future: asyncio.Future[T] = loop.create_future()
    _current().jobs.put((function, args, kwargs, future, loop))
    return await future


def _run_inline(loop: asyncio.AbstractEventLoop, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """The job on this thread, with the hygiene of the database thread; the loop waits for it."""
    # Django's async_unsafe guard looks for a running loop on this thread; asyncio's own helper (the one
    # uvloop uses too) takes it away until the job is done.
    asyncio.events._set_running_loop(None)
    previous, _local.loop = getattr(_local, "loop", None), loop
    try:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            with contextlib.suppress(Exception):  # the next job's own call raises it to its caller
                close_old_connections()
    finally:
        _local.loop = previous
        asyncio.events._set_running_loop(loop)

"""pki_server/dbthread.py: the database thread the ACME handlers, the worker and the OCSP endpoints hop to,
and the inline mode that replaces it on SQLite."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connections

from pki_server import dbthread
from pki_server.core.models import CertificateAuthority

# The thread tidies its database connection around every job (close_old_connections), so every test
# here may touch the database.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The thread (PostgreSQL's mode), unless a test is marked ``inline`` (SQLite's)."""
    inline = request.node.get_closest_marker("inline") is not None
    monkeypatch.setattr(dbthread, "INLINE", inline)
    return inline


def test_the_mode_follows_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.conf import settings

    for engine, inline in (("django.db.backends.sqlite3", True), ("pki_server.postgresql", False)):
        monkeypatch.setattr(dbthread, "INLINE", None)
        monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", engine)
        assert dbthread.inline() is inline


def where() -> tuple[str, int]:
    return threading.current_thread().name, threading.get_ident()


async def test_runs_on_one_thread_of_its_own_and_returns_the_result() -> None:
    name, ident = await dbthread.run(where)
    assert name == "pki-database" and ident != threading.get_ident()
    assert {await dbthread.run(where) for _ in range(20)} == {(name, ident)}
    assert await dbthread.run(lambda a, *, b: a + b, 2, b=3) == 5


async def test_an_exception_comes_back_to_the_caller() -> None:
    def fail() -> None:
        raise LookupError("from the database thread")

    with pytest.raises(LookupError, match="from the database thread"):
        await dbthread.run(fail)
    assert await dbthread.run(where)  # the thread carries on


async def test_a_cancelled_caller_leaves_the_thread_working() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    task = asyncio.create_task(dbthread.run(slow))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await dbthread.run(where))[0] == "pki-database"


async def test_it_uses_a_database_connection_of_its_own(intermediate: CertificateAuthority) -> None:
    def read() -> tuple[int, list[str]]:
        return id(connections["default"]), list(CertificateAuthority.objects.values_list("name", flat=True))

    wrapper, names = await dbthread.run(read)
    assert "intermediate" in names  # what the test's thread committed
    assert wrapper != id(connections["default"])  # Django's connections are per thread: this is the thread's own


async def test_sync_code_on_the_thread_reaches_the_callers_event_loop() -> None:
    """As under asgiref: async_to_sync in a job runs the coroutine on the loop that made the hop."""
    async def loop_of() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert await dbthread.run(async_to_sync(loop_of)) is asyncio.get_running_loop()


def test_a_forked_child_starts_a_thread_of_its_own() -> None:
    parent = asyncio.run(dbthread.run(where))
    child = os.fork()
    if child == 0:  # the parent's thread did not come along; the child's first hop starts a new one
        try:
            inherited = dbthread._thread
            name, _ident = asyncio.run(dbthread.run(where))
            ok = inherited is not None and not inherited.thread.is_alive() and dbthread._thread is not inherited
            os._exit(0 if ok and name == "pki-database" else 1)
        except BaseException:
            os._exit(2)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert asyncio.run(dbthread.run(where)) == parent  # the parent's thread goes on


def test_inside_async_to_sync_the_callers_thread_runs_it() -> None:
    """The tests' in-process ASGI client runs the app through async_to_sync: the work must stay in the
    calling thread (its transaction, its query counting), as channels' database_sync_to_async does."""
    async def hop() -> tuple[str, int]:
        return await dbthread.run(where)

    assert async_to_sync(hop)() == where()


# --- inline (SQLite) -------------------------------------------------------------------------------------------------


@pytest.mark.inline
async def test_inline_a_job_runs_on_the_loops_thread_with_the_orm(intermediate: CertificateAuthority) -> None:
    loop = asyncio.get_running_loop()

    def read() -> tuple[tuple[str, int], list[str], asyncio.AbstractEventLoop | None]:
        # Django raises SynchronousOnlyOperation for ORM calls on a thread with a running loop.
        names = list(CertificateAuthority.objects.values_list("name", flat=True))
        return where(), names, dbthread.job_loop()

    here, names, job_loop = await dbthread.run(read)
    assert here == where()
    assert "intermediate" in names
    assert job_loop is loop
    assert asyncio.get_running_loop() is loop  # given back
    assert dbthread.job_loop() is None


@pytest.mark.inline
async def test_inline_an_exception_comes_back_and_the_loop_runs_on() -> None:
    loop = asyncio.get_running_loop()

    def fail() -> None:
        raise LookupError("from an inline job")

    with pytest.raises(LookupError, match="from an inline job"):
        await dbthread.run(fail)
    assert asyncio.get_running_loop() is loop
    assert dbthread.job_loop() is None
    await asyncio.sleep(0)  # still a working loop
    assert await dbthread.run(lambda a, *, b: a + b, 2, b=3) == 5


@pytest.mark.inline
async def test_inline_the_dashboards_events_reach_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """events.publish from a job queues the event on the loop that runs the job, as from the thread."""
    from pki_server.dashboard import events

    queued: list[tuple[Any, asyncio.AbstractEventLoop]] = []
    monkeypatch.setattr(events, "_enqueue", lambda event: queued.append((event, asyncio.get_running_loop())))
    await dbthread.run(events.publish, {"kind": "order.created"})
    assert queued == []  # called soon, from the loop, once the job is done
    await asyncio.sleep(0)
    assert queued == [({"kind": "order.created"}, asyncio.get_running_loop())]


@pytest.mark.inline
def test_inline_async_to_sync_in_a_job_runs_elsewhere_and_does_not_hang() -> None:
    """A job calling async_to_sync must not wait for the loop it is blocking: asgiref runs the coroutine on a
    loop of its own. Checked on a loop in another thread, joined with a timeout, so a deadlock fails the test."""
    async def loop_of() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def hop() -> tuple[bool, bool]:
        other = await dbthread.run(async_to_sync(loop_of))
        return other is not asyncio.get_running_loop(), asyncio.get_running_loop() is not None

    results: list[tuple[bool, bool]] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(hop())), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the inline job deadlocked on async_to_sync"
    assert results == [(True, True)]

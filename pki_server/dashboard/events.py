"""Live events for the dashboard: the core's and ACME's signals, published to the channel-layer group
``dashboard`` once their transaction has committed (consumers.py forwards them to the browsers).

An event is a small JSON object::

    {"kind": "order.created", "time": "2025-01-01T12:00:00Z", "summary": "New order for a.example (account …)",
     "detail": null, "url": "/dashboard/accounts/<slug>/"}

``kind`` is one of :data:`KINDS`; ``detail`` is the problem detail of a failure, else null; ``url`` is the
dashboard page of the object concerned, or null. Events carry names, serials and slugs, never key material.

Publishing must never break or slow the ACME operation that sent the signal. Building an event costs at
most one small query, after the commit; sending it costs the signalling thread nothing when it runs under
``sync_to_async`` or the database thread (the web process, the in-process worker, ``pki-server worker``),
or inline on the loop's own thread (SQLite, pki_server/dbthread.py): the event is queued on that event
loop and sent from there, in order, by one task. Only a process without an event loop (the CLI)
sends synchronously, and only to a shared (Redis) layer. Every failure is logged, never raised.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import weakref
from collections.abc import Callable
from datetime import UTC
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from pki_server import dbthread
from pki_server.acme import signals as acme_signals
from pki_server.acme.models import AcmeChallenge, AcmeOrder
from pki_server.core import signals as core_signals
from pki_server.core.models import Certificate
from pki_server.dashboard import presence

log = logging.getLogger("pki_server.dashboard.events")

GROUP = "dashboard"
MESSAGE_TYPE = "dashboard.event"
KINDS = ("order.created", "challenge.valid", "challenge.invalid", "order.valid", "order.invalid",
         "certificate.issued", "certificate.revoked")
QUEUE_LIMIT = 1000  # events waiting on one event loop; beyond that they are dropped (and logged)
SEND_TIMEOUT = 5.0  # seconds one group_send may take
PROBLEM_PREFIX = "urn:ietf:params:acme:error:"

Event = dict[str, Any]


# --- URLs of the dashboard's pages (pki_server/dashboard/urls.py) --------------------------------------

def account_url(slug: str) -> str:
    return reverse("dashboard:account", args=[slug])


def certificate_url(serial: str) -> str:
    return reverse("dashboard:certificate", args=[serial])


def ca_url(serial: str) -> str:
    return reverse("dashboard:ca", args=[serial])


# --- Events ---------------------------------------------------------------------------------------

def make_event(kind: str, summary: str, detail: str | None = None, url: str | None = None) -> Event:
    assert kind in KINDS, kind
    time = timezone.now().astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"kind": kind, "time": time, "summary": summary, "detail": detail, "url": url}


def _problem(error: Any) -> tuple[str, str | None]:
    """(short problem type, detail) of an ACME problem document."""
    if not isinstance(error, dict):
        return "unknown error", None
    kind = str(error.get("type") or "unknown error").removeprefix(PROBLEM_PREFIX)
    detail = error.get("detail")
    return kind, str(detail) if detail else None


def _names(identifiers: Any) -> str:
    return ", ".join(str(i.get("value")) for i in identifiers if isinstance(i, dict)) or "no identifier"


def order_created_event(order: AcmeOrder) -> Event:
    slug = order.account.slug  # loaded by newOrder (acme/signals.py)
    return make_event("order.created", f"New order for {_names(order.identifiers)} (account {slug})",
                      url=account_url(slug))


def challenge_event(challenge_id: int, valid: bool, error: Any) -> Event | None:
    row = (AcmeChallenge.objects.filter(pk=challenge_id)
           .values_list("type", "authorization__identifier", "authorization__wildcard",
                        "authorization__account__slug").first())
    if row is None:
        return None
    kind, identifier, wildcard, slug = row
    name = f"*.{identifier}" if wildcard else identifier
    if valid:
        return make_event("challenge.valid", f"{kind} validation of {name} succeeded", url=account_url(slug))
    problem, detail = _problem(error)
    return make_event("challenge.invalid", f"{kind} validation of {name} failed: {problem}", detail,
                      account_url(slug))


def order_finished_event(order: AcmeOrder) -> Event:
    names = _names(order.identifiers)
    if order.status == AcmeOrder.STATUS_VALID and order.certificate_id is not None:
        serial = Certificate.objects.filter(pk=order.certificate_id).values_list("serial", flat=True).first()
        return make_event("order.valid", f"Order for {names} is valid: certificate {serial} issued",
                          url=certificate_url(serial) if serial else None)
    problem, detail = _problem(order.error)
    return make_event("order.invalid", f"Order for {names} failed: {problem}", detail, None)


def _cert_names(cert: Certificate) -> str:
    names = [name.partition(":")[2] for name in cert.sans.split(",") if name]
    return ", ".join(names) or cert.cn or "no name"


def issued_event(cert: Certificate) -> Event:
    # cert.ca is the object create_cert signed with: no query.
    return make_event("certificate.issued", f"Certificate {cert.serial} issued for {_cert_names(cert)} "
                      f"by {cert.ca.name}", url=certificate_url(cert.serial))


def revoked_event(cert: Any) -> Event:
    reason = (cert.revoked_reason or "unspecified").replace("_", " ")  # key_compromise: "key compromise"
    if isinstance(cert, Certificate):
        return make_event("certificate.revoked", f"Certificate {cert.serial} for {_cert_names(cert)} revoked "
                          f"({reason})", url=certificate_url(cert.serial))
    return make_event("certificate.revoked", f"CA {cert.name} (serial {cert.serial}) revoked ({reason})",
                      url=ca_url(cert.serial))


# --- Publishing -----------------------------------------------------------------------------------

class _Outbox:
    """The events waiting on one event loop, sent one after the other by a single task (so in order)."""

    def __init__(self) -> None:
        self.pending: collections.deque[Event] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0

    def put(self, event: Event) -> None:
        if len(self.pending) >= QUEUE_LIMIT:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("Dashboard events are not sent fast enough; %s dropped so far.", self.dropped)
            return
        self.pending.append(event)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> None:
        layer = get_channel_layer()
        while self.pending:
            await _send(layer, self.pending.popleft())


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Outbox] = weakref.WeakKeyDictionary()


def _enqueue(event: Event) -> None:
    """On the event loop's own thread: queue the event for that loop's sender task."""
    loop = asyncio.get_running_loop()
    outbox = _outboxes.get(loop)
    if outbox is None:
        outbox = _outboxes[loop] = _Outbox()
    outbox.put(event)


async def _send(layer: Any, event: Event) -> None:
    try:
        await asyncio.wait_for(layer.group_send(GROUP, {"type": MESSAGE_TYPE, "event": event}), SEND_TIMEOUT)
    except Exception:
        log.warning("Could not publish the dashboard event %r.", event.get("kind"), exc_info=True)


def _event_loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    """The event loop whose ``sync_to_async`` runs this thread (asgiref records it), or that waits for the
    database job running inline on it (pki_server/dbthread.py), if it still runs."""
    loop: asyncio.AbstractEventLoop | None = dbthread.job_loop()
    if loop is None:
        loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
        if loop is None or getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
            return None
    return loop if loop.is_running() and not loop.is_closed() else None


def publish(event: Event) -> None:
    """Send ``event`` to the group without waiting for it (see the module's docstring). Never raises."""
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # called on an event loop's own thread
            _enqueue(event)
            return
        loop = _event_loop_of_this_thread()
        if loop is not None:
            loop.call_soon_threadsafe(_enqueue, event)
            return
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return  # nobody can listen to the memory of a process without an event loop
        async_to_sync(_send)(layer, event)
    except Exception:
        log.warning("Could not publish a dashboard event.", exc_info=True)


def _nobody_listens() -> bool:
    """True when no dashboard can be listening (presence.py): then an event costs nothing, not even its
    query, on the in-memory layer (an empty group) and on Redis (no live websocket's key)."""
    return not presence.somebody_listens(GROUP)


def _after_commit(build: Callable[[], Event | None]) -> None:
    """Build and publish the event once the current transaction commits (at once outside one)."""
    try:
        if _nobody_listens():
            return
    except Exception:
        log.warning("Could not look up the channel layer.", exc_info=True)
        return

    def run() -> None:
        try:
            event = build()
        except Exception:
            log.warning("Could not build a dashboard event.", exc_info=True)
            return
        if event is not None:
            publish(event)

    try:
        transaction.on_commit(run)
    except Exception:
        log.warning("Could not schedule a dashboard event.", exc_info=True)


# --- Receivers ------------------------------------------------------------------------------------

def on_order_created(sender: Any, order: AcmeOrder, **kwargs: Any) -> None:
    _after_commit(lambda: order_created_event(order))


def on_challenge_finished(sender: Any, challenge_id: int, valid: bool, error: Any = None, **kwargs: Any) -> None:
    _after_commit(lambda: challenge_event(challenge_id, valid, error))


def on_order_finished(sender: Any, order: AcmeOrder, **kwargs: Any) -> None:
    _after_commit(lambda: order_finished_event(order))


def on_issued(sender: Any, cert: Certificate, **kwargs: Any) -> None:
    _after_commit(lambda: issued_event(cert))


def on_revoked(sender: Any, cert: Any, **kwargs: Any) -> None:
    _after_commit(lambda: revoked_event(cert))


acme_signals.order_created.connect(on_order_created, dispatch_uid="pki_dashboard_order_created")
acme_signals.challenge_finished.connect(on_challenge_finished, dispatch_uid="pki_dashboard_challenge_finished")
acme_signals.order_finished.connect(on_order_finished, dispatch_uid="pki_dashboard_order_finished")
core_signals.post_issue_cert.connect(on_issued, dispatch_uid="pki_dashboard_issued")
core_signals.post_revoke_cert.connect(on_revoked, dispatch_uid="pki_dashboard_revoked")

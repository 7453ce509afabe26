"""The dashboard's live feed (pki_server/dashboard/events.py, consumers.py).

- In process, with channels' WebsocketCommunicator against the real ASGI application: who may connect, and
  events that real operations (issuance, revocation, a new order, a failed validation) publish.
- What publishing costs: nothing when nobody listens, one query for a challenge's event; a channel layer
  that fails does not fail the operation.
- End to end: `pki-server serve`, a staff user signed in through the login form, a real websocket client,
  and a real ACME order whose events arrive in order.
The scaled topology (an event crossing processes through Redis) is tested in tests/scale/test_live_events.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import InMemoryChannelLayer, get_channel_layer
from cryptography import x509
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pki_server.acme import orders
from pki_server.acme import signals as acme_signals
from pki_server.acme.models import AcmeAccount, AcmeChallenge, AcmeOrder
from pki_server.asgi import application
from pki_server.core.key_backends.storages import UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.dashboard import events
from tests.acme import flow_helpers
from tests.acme.server import free_port, running_server
from tests.dashboard.live_client import VIEW_PERMISSIONS, collect, create_staff_code, kinds, login, open_feed
from tests.fixtures import make_csr

ORIGIN = b"http://127.0.0.1:8000"
TIMEOUT = 5  # seconds an in-process message may take
PASSWORD = "correct horse battery staple"


def issue(ca: CertificateAuthority, *names: str) -> Certificate:
    san = x509.SubjectAlternativeName([x509.DNSName(name) for name in names])
    return Certificate.objects.create_cert(ca, UsePrivateKeyOptions(), make_csr(), subject=f"/CN={names[0]}",
                                           extensions=[san])


def session_cookie(user: User) -> bytes:
    """A real session of ``user`` in Django's session engine, as the cookie a browser would send."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


class WebsocketCommunicator(ApplicationCommunicator):
    """A websocket client of an ASGI application, in process (channels.testing's needs daphne)."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(application, {"type": "websocket", "path": path, "query_string": b"", "headers": headers,
                                       "subprotocols": []})

    async def connect(self, timeout: float) -> bool:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        assert response["type"] in ("websocket.accept", "websocket.close"), response
        return bool(response["type"] == "websocket.accept")

    async def receive_json_from(self, timeout: float) -> Any:
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send" and "text" in response, response
        return json.loads(response["text"])

    async def disconnect(self, timeout: float) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(timeout)


def communicator(cookie: bytes | None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator("/dashboard/ws/events/", headers)


def group_members() -> dict[str, Any]:
    layer = get_channel_layer()
    return dict(layer.groups.get(events.GROUP, {}))  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def empty_channel_layer() -> Iterator[None]:
    """A test that fails with a websocket open leaves no member in the (process-wide) in-memory layer."""
    yield
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        async_to_sync(layer.flush)()


def make_user(username: str, *, is_staff: bool = True, is_active: bool = True, permissions: bool = True) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=is_staff, is_active=is_active)
    if permissions:
        user.user_permissions.set(Permission.objects.filter(codename__in=VIEW_PERMISSIONS))
    return user


@pytest.fixture
def staff_cookie(db: None) -> bytes:
    return session_cookie(make_user("ops"))


@pytest.fixture
async def feed(staff_cookie: bytes) -> AsyncIterator[WebsocketCommunicator]:
    """A staff user's websocket, connected (and so in the group)."""
    ws = communicator(staff_cookie)
    connected = await ws.connect(timeout=TIMEOUT)
    assert connected
    assert len(group_members()) == 1
    yield ws
    await ws.disconnect(timeout=TIMEOUT)
    assert group_members() == {}


def assert_event(event: dict[str, Any], kind: str, *in_summary: str) -> None:
    assert set(event) == {"kind", "time", "summary", "detail", "url"}, event
    assert event["kind"] == kind, event
    sent = datetime.fromisoformat(event["time"])
    assert sent.utcoffset() == timedelta(0) and event["time"].endswith("Z"), event
    assert abs(timezone.now() - sent) < timedelta(minutes=1), event
    for text in in_summary:
        assert text in event["summary"], event
    assert "PRIVATE KEY" not in str(event)


# --- Who may connect ------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["anonymous", "not staff", "inactive staff", "staff without view permissions"])
async def test_only_active_staff_may_listen(who: str) -> None:
    cookie = None
    if who != "anonymous":
        user = await sync_to_async(make_user)("someone", is_staff=who != "not staff",
                                              is_active=who != "inactive staff",
                                              permissions=who != "staff without view permissions")
        cookie = await sync_to_async(session_cookie)(user)
    ws = communicator(cookie)
    connected = await ws.connect(timeout=TIMEOUT)
    assert connected  # accepted only to say why it is closed: the page stops retrying on 4403
    assert await ws.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4403}
    assert group_members() == {}
    await ws.disconnect(timeout=TIMEOUT)  # the server reports the close; the consumer ends


@pytest.mark.django_db(transaction=True)
async def test_a_foreign_origin_is_refused(staff_cookie: bytes) -> None:
    ws = communicator(staff_cookie, origin=b"https://attacker.example")
    connected = await ws.connect(timeout=TIMEOUT)
    assert not connected
    assert group_members() == {}


@pytest.mark.django_db(transaction=True)
async def test_another_websocket_path_is_refused(staff_cookie: bytes) -> None:
    ws = WebsocketCommunicator("/dashboard/ws/other/", [(b"origin", ORIGIN), (b"cookie", staff_cookie)])
    connected = await ws.connect(timeout=TIMEOUT)
    assert not connected


# --- Events of real operations --------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
async def test_issue_and_revoke_reach_a_staff_user(feed: WebsocketCommunicator,
                                                   intermediate: CertificateAuthority) -> None:
    cert = await sync_to_async(issue)(intermediate, "www.example.com", "alt.example.net")
    issued = await feed.receive_json_from(timeout=TIMEOUT)
    assert_event(issued, "certificate.issued", cert.serial, "www.example.com, alt.example.net", "intermediate")
    assert issued["url"] == f"/dashboard/certificates/{cert.serial}/"
    assert issued["detail"] is None

    await sync_to_async(cert.revoke)("keyCompromise")
    revoked = await feed.receive_json_from(timeout=TIMEOUT)
    assert_event(revoked, "certificate.revoked", cert.serial, "www.example.com", "revoked (key compromise)")
    assert revoked["url"] == f"/dashboard/certificates/{cert.serial}/"
    assert await feed.receive_nothing(timeout=0.2)


@pytest.mark.django_db(transaction=True)
async def test_revoking_a_ca_is_an_event(feed: WebsocketCommunicator, intermediate: CertificateAuthority) -> None:
    await sync_to_async(intermediate.revoke)("cessationOfOperation")
    event = await feed.receive_json_from(timeout=TIMEOUT)
    assert_event(event, "certificate.revoked", "CA intermediate", intermediate.serial,
                 "revoked (cessation of operation)")
    assert event["url"] == f"/dashboard/cas/{intermediate.serial}/"


@pytest.mark.django_db(transaction=True)
async def test_new_order_and_failed_validation(feed: WebsocketCommunicator,
                                               intermediate: CertificateAuthority) -> None:
    account = await AcmeAccount.objects.acreate(ca=intermediate, thumbprint="t" * 43, jwk="{}")
    order, (authz,) = await sync_to_async(orders.new_order)(
        account, {"identifiers": [{"type": "dns", "value": "bad.example.com"}]})
    created = await feed.receive_json_from(timeout=TIMEOUT)
    assert_event(created, "order.created", "New order for bad.example.com", account.slug)
    assert created["url"] == f"/dashboard/accounts/{account.slug}/"

    challenge = await AcmeChallenge.objects.aget(authorization=authz, type="http-01")
    assert await sync_to_async(orders.start_challenge)(challenge)
    error = {"type": "urn:ietf:params:acme:error:connection", "detail": "127.0.0.1:80: connection refused",
             "status": 400}
    assert await sync_to_async(orders.finish_validation)(challenge.pk, False, None, error)
    failed = await feed.receive_json_from(timeout=TIMEOUT)
    assert_event(failed, "challenge.invalid", "http-01 validation of bad.example.com failed: connection")
    assert failed["detail"] == "127.0.0.1:80: connection refused"
    assert failed["url"] == f"/dashboard/accounts/{account.slug}/"
    assert (await AcmeOrder.objects.aget(pk=order.pk)).status == AcmeOrder.STATUS_INVALID
    assert await feed.receive_nothing(timeout=0.2)


@pytest.mark.django_db(transaction=True)
async def test_a_rolled_back_change_is_no_event(feed: WebsocketCommunicator,
                                                intermediate: CertificateAuthority) -> None:
    def issue_then_roll_back() -> None:
        from django.db import transaction

        with pytest.raises(RuntimeError), transaction.atomic():
            issue(intermediate, "rolled-back.example.com")
            raise RuntimeError("rolled back")

    await sync_to_async(issue_then_roll_back)()
    assert await feed.receive_nothing(timeout=0.5)


# --- What publishing costs, and what a failing channel layer does ------------------------------------

@pytest.mark.django_db
def test_nobody_listening_costs_nothing(intermediate: CertificateAuthority, django_capture_on_commit_callbacks: Any,
                                        django_assert_num_queries: Any) -> None:
    account = AcmeAccount.objects.create(ca=intermediate, thumbprint="t" * 43, jwk="{}")
    _order, (authz,) = orders.new_order(account, {"identifiers": [{"type": "dns", "value": "a.example.com"}]})
    challenge = authz.challenges.get(type="http-01")
    assert group_members() == {}
    with django_capture_on_commit_callbacks() as callbacks:
        acme_signals.challenge_finished.send(sender=AcmeChallenge, challenge_id=challenge.pk, valid=True, error=None)
    assert callbacks == []

    layer = get_channel_layer()
    async_to_sync(layer.group_add)(events.GROUP, "test.listener")
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            acme_signals.challenge_finished.send(sender=AcmeChallenge, challenge_id=challenge.pk, valid=True,
                                                 error=None)
        assert len(callbacks) == 1
        with django_assert_num_queries(1):  # the challenge's type, name and account, in one query
            event = events.challenge_event(challenge.pk, True, None)
        assert event is not None
        assert_event(event, "challenge.valid", "http-01 validation of a.example.com succeeded")
    finally:
        async_to_sync(layer.group_discard)(events.GROUP, "test.listener")


@pytest.mark.django_db
def test_a_failing_channel_layer_does_not_fail_the_operation(
    intermediate: CertificateAuthority, settings: Any, caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    cert = issue(intermediate, "www.example.com")
    # A Redis that is not there (nothing listens on the port): every group_send fails.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]}}}
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        cert.revoke("superseded")
    assert len(callbacks) >= 1
    assert time.monotonic() - started < events.SEND_TIMEOUT + 1
    assert Certificate.objects.get(pk=cert.pk).revoked
    assert "Could not publish the dashboard event 'certificate.revoked'" in caplog.text


# --- End to end: a real server, a real websocket client, a real ACME order -----------------------------

def test_live_feed_of_a_real_server(tmp_path: Path) -> None:
    with running_server(tmp_path / "server") as server:
        server.manage("shell", "-c", create_staff_code("ops", PASSWORD))
        session = login(server.base_url, "ops", PASSWORD)

        # The overview page holds the feed's element and loads the script, which the server serves.
        page = httpx.get(f"{server.base_url}/dashboard/", cookies={"sessionid": session}, timeout=10)
        assert page.status_code == 200, page.text
        assert 'data-ws-path="/dashboard/ws/events/"' in page.text and 'id="live-event-list"' in page.text
        assert '<script src="/static/dashboard/live.js" defer></script>' in page.text
        script = httpx.get(f"{server.base_url}/static/dashboard/live.js", timeout=10)
        assert script.status_code == 200 and "live-event-list" in script.text

        # No session: accepted, then closed with 4403. A page of another origin: the handshake is refused.
        with open_feed(server.base_url, None) as anonymous, pytest.raises(ConnectionClosed) as closed:
            anonymous.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        with pytest.raises(InvalidStatus) as refused:
            open_feed(server.base_url, session, origin="https://attacker.example")
        assert refused.value.response.status_code == 403

        with open_feed(server.base_url, session) as feed, flow_helpers.no_new_tracebacks(server):
            acme = flow_helpers.register(server)
            name = flow_helpers.unique_name("live")
            flow_helpers.obtain(server, acme, [name])
            got = collect(feed, lambda e: "order.valid" in kinds(e), flow_helpers.DEADLINE,
                          lambda: server.log_path.read_text()[-3000:])
            assert kinds(got) == ["order.created", "challenge.valid", "certificate.issued", "order.valid"]
            for event in got:
                assert_event(event, event["kind"], name)
            ((serial,),) = server.query("SELECT serial FROM pki_core_certificate WHERE cn = ?", name)
            assert got[2]["url"] == got[3]["url"] == f"/dashboard/certificates/{serial}/"
            assert serial in got[2]["summary"] and serial in got[3]["summary"]
            assert "http-01" in got[1]["summary"]

            # A validation that fails: the problem's type in the summary, its detail beside it.
            bad = flow_helpers.unique_name("live-bad")
            orderr, _key = flow_helpers.new_order(server, acme, [bad])
            flow_helpers.answer_http01(server, acme, orderr.authorizations[0], content="not the key authorization")
            got = collect(feed, lambda e: "challenge.invalid" in kinds(e), flow_helpers.DEADLINE,
                          lambda: server.log_path.read_text()[-3000:])
            assert kinds(got) == ["order.created", "challenge.invalid"]
            assert_event(got[1], "challenge.invalid", f"http-01 validation of {bad} failed: ")
            assert got[1]["detail"], got[1]


# --- The page's script, in Node with a stand-in DOM and WebSocket -------------------------------------

LIVE_JS = Path(events.__file__).parent / "static" / "dashboard" / "live.js"

# Runs live.js against stand-ins that record what it does, drives a connection through its states, and
# prints what the page would show. innerHTML throws: the script must use textContent only.
NODE_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
function node(tag) {
  return {
    tagName: tag, children: [], attributes: {}, className: "", textContent: "", href: undefined,
    setAttribute(k, v) { this.attributes[k] = String(v); },
    getAttribute(k) { return k in this.attributes ? this.attributes[k] : null; },
    appendChild(c) { this.children.push(c); return c; },
    insertBefore(c, ref) {
      const i = ref ? this.children.indexOf(ref) : -1;
      if (i < 0) this.children.push(c); else this.children.splice(i, 0, c);
      return c;
    },
    removeChild(c) { this.children.splice(this.children.indexOf(c), 1); return c; },
    get firstChild() { return this.children[0] || null; },
    get lastChild() { return this.children[this.children.length - 1] || null; },
    set innerHTML(v) { throw new Error("innerHTML used"); },
  };
}
const section = node("section"), list = node("ol");
section.setAttribute("data-ws-path", "/dashboard/ws/events/");
const sockets = [], timers = [];
function FakeSocket(url) { this.url = url; sockets.push(this); }
const context = {
  document: {
    getElementById: (id) => ({ "live-events": section, "live-event-list": list })[id] || null,
    createElement: node,
    createTextNode: (text) => ({ text: text }),
  },
  JSON: JSON, Math: Math,
};
context.window = { WebSocket: FakeSocket, location: { protocol: "https:", host: "pki.example:8443" },
                   setTimeout: (fn, ms) => { timers.push({ fn: fn, ms: ms }); } };
context.WebSocket = FakeSocket;
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), context);

const out = { url: sockets[0].url, states: [section.getAttribute("data-state")], delays: [] };
const socket = sockets[0];
socket.onopen();
out.states.push(section.getAttribute("data-state"));
for (let i = 0; i < 55; i++) {
  socket.onmessage({ data: JSON.stringify({ kind: "order.created", time: "2025-01-01T00:00:00Z",
                                           summary: "order " + i, detail: null, url: "/dashboard/accounts/a/" }) });
}
socket.onmessage({ data: "not json" });
socket.onmessage({ data: JSON.stringify({ kind: "challenge.invalid", time: "2025-01-01T00:00:01Z",
  summary: "<b>x</b>", detail: "<img src=x onerror=alert(1)>", url: "//attacker.example/" }) });
const show = (li) => ({ className: li.className,
  parts: li.children.filter((c) => c.tagName).map((c) => [c.tagName, c.className, c.textContent, c.href || null]) });
out.count = list.children.length;
out.first = show(list.children[0]);
out.second = show(list.children[1]);
out.last = show(list.children[list.children.length - 1]);
out.firstTime = list.children[0].children.find((c) => c.tagName === "time").attributes;
// The connection drops: reconnect with doubling delays, capped; an open connection resets them.
let current = socket;
for (let i = 0; i < 7; i++) {
  current.onclose({ code: 1006 });
  out.states.push(section.getAttribute("data-state"));
  out.delays.push(timers[timers.length - 1].ms);
  timers[timers.length - 1].fn();
  current = sockets[sockets.length - 1];
}
current.onopen();
current.onclose({ code: 1006 });
out.delays.push(timers[timers.length - 1].ms);
timers[timers.length - 1].fn();
current = sockets[sockets.length - 1];
// Refused (4403): no more attempts.
const before = timers.length;
current.onclose({ code: 4403 });
out.states.push(section.getAttribute("data-state"));
out.retriedAfterForbidden = timers.length !== before;
out.sockets = sockets.length;
console.log(JSON.stringify(out));
"""


def test_live_js_shows_events_and_reconnects(tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed")
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS)
    # The time is shown in the browser's time zone: one 5 h 30 min east of UTC here.
    result = subprocess.run([node, str(harness), str(LIVE_JS)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "TZ": "Asia/Kolkata"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["url"] == "wss://pki.example:8443/dashboard/ws/events/"
    assert out["states"] == ["connecting", "open", *["closed"] * 7, "forbidden"]
    assert out["delays"] == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 1000]
    assert out["retriedAfterForbidden"] is False
    assert out["sockets"] == 9
    assert out["count"] == 50  # at most 50, newest first
    assert out["first"] == {"className": "event event-challenge-invalid", "parts": [
        ["span", "event-kind event-kind-invalid", "challenge invalid", None],
        ["time", "event-time", "05:30:01", None],
        ["span", "event-summary", "<b>x</b>", None],
        ["span", "event-detail", "<img src=x onerror=alert(1)>", None],
    ]}  # text as text; a link to another site is not made
    assert out["firstTime"] == {"datetime": "2025-01-01T00:00:01Z", "title": "2025-01-01T00:00:01Z"}
    assert out["second"] == {"className": "event event-order-created", "parts": [
        ["span", "event-kind event-kind-created", "order created", None],
        ["time", "event-time", "05:30:00", None],
        ["span", "event-summary", "order 54", None],
        ["a", "event-link", "details", "/dashboard/accounts/a/"],
    ]}
    assert out["last"]["parts"][2][2] == "order 6"

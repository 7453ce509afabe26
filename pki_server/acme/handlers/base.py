"""The shape every ACME handler shares: a lean ASGI app, not Django's request stack.

A request is read (with a size cap), its JWS parsed and its header checked (jose.py), its nonce
spent in memory or Redis (nonces.py), and then *all* of its database work — spending the nonce when
the database is the nonce store, finding the CA and the account, checking the signature and the
handler's own work — runs in one hop to the database thread (pki_server/dbthread.py). Every
response, errors included, carries a fresh ``Replay-Nonce`` and a ``Link`` to the directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pki_server import dbthread
from pki_server.acme import accounts, jose, nonces, problems
from pki_server.acme.cas import acme_ca, cached_acme_ca
from pki_server.acme.models import AcmeAccount
from pki_server.acme.problems import AcmeProblem
from pki_server.acme.urls import AcmeUrls
from pki_server.core.models import CertificateAuthority
from pki_server.prepared import Prepared
from pki_server.scope import Receive, Scope, Send, header, host_allowed

if TYPE_CHECKING:
    from pki_server.acme.worker import ValidationJob

log = logging.getLogger("pki_server.acme")

MAX_BODY = 64 * 1024  # bytes; a finalize with an RSA-8192 CSR is well below this
JOSE_JSON = "application/jose+json"


@dataclass
class Response:
    status: int = 200
    body: Any = None  # a dict (JSON) or bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    # Work for the worker, sent once the database work is committed: (message type, object id).
    dispatch: list[tuple[str, int]] = field(default_factory=list)
    # Validations claimed by this request for this process's worker: (challenge id, what it needs).
    validate_here: list[tuple[int, ValidationJob]] = field(default_factory=list)
    # An order sent to a worker for issuance, and the response once it is issued (run in the database
    # thread): the request waits a little for the worker rather than have the client poll (worker.wait_issued).
    after_issue: tuple[int, Callable[[], Response]] | None = None


@dataclass
class Request:
    method: str
    url: str
    urls: AcmeUrls
    ca: CertificateAuthority
    kwargs: dict[str, str]
    jws: jose.JWS | None = None
    account: AcmeAccount | None = None
    owned: list[Any] = field(default_factory=list)  # what AcmeHandler.owned_lookup found with the account

    def payload(self) -> dict[str, Any]:
        assert self.jws is not None
        return self.jws.json_payload()

    def require_post_as_get(self) -> None:
        """Resources that only read take an empty payload (RFC 8555 §6.3)."""
        assert self.jws is not None
        if not self.jws.is_post_as_get:
            raise problems.malformed("This resource is read with POST-as-GET: the payload must be empty.")

    def require_account(self) -> AcmeAccount:
        if self.account is None:
            raise problems.malformed("This request must be signed by an account key (kid), not a jwk.")
        return self.account


class AcmeHandler:
    """Subclasses set ``methods`` and implement ``get`` (GET/HEAD, no JWS) and/or ``post``."""

    methods: ClassVar[tuple[str, ...]] = ("POST",)
    #: Whether ``get`` reads the database. If not, a GET whose CA is cached is answered on the event
    #: loop, without the thread hop (the directory and newNonce).
    get_reads_database: ClassVar[bool] = False
    #: "kid" (an account signs), "jwk" (a new key signs: newAccount) or "either" (revokeCert).
    signer: ClassVar[str] = "kid"
    #: The resource of the URL's slug with its account, by (the kid's account slug, the slug): when the
    #: signer owns the resource, as it nearly always does, the account and the resource are found in
    #: one query (``Request.owned``) instead of two. Otherwise the handler looks the resource up itself.
    owned_lookup: ClassVar[Prepared[Any] | None] = None

    @classmethod
    def as_asgi(cls) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await cls().run(scope, receive, send)

        app.handler_class = cls  # type: ignore[attr-defined]
        return app

    # --- the request cycle ------------------------------------------------------------------

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        kwargs = dict(scope.get("url_route", {}).get("kwargs", {}))
        origin = ""
        ca_name = kwargs.pop("ca", None)
        try:
            origin = self.origin(scope)
            allowed = set(self.methods) | ({"HEAD"} if "GET" in self.methods else set())
            if method not in allowed:
                raise problems.AcmeProblem("malformed", f"{method} is not allowed here.", 405,
                                           headers={"Allow": ", ".join(sorted(allowed))})
            body = await self.read_body(scope, receive)
            url = origin + scope["path"] + (f"?{scope['query_string'].decode('latin-1')}"
                                            if scope.get("query_string") else "")
            jws = None
            spend_in_database = 0  # seconds the nonce stays good, when the database must spend it
            if method == "POST":
                content_type = header(scope, b"content-type").split(";")[0].strip().lower()
                if content_type != JOSE_JSON:
                    raise AcmeProblem("malformed", f"POST requests need Content-Type: {JOSE_JSON} (RFC 8555 §6.2).",
                                      415)
                jws = jose.parse(body, url=url)
                remaining = nonces.check(jws.nonce)
                nonce_store = nonces.store()
                if nonce_store == "memory":
                    nonces.redeem_in_memory(jws.nonce)
                elif nonce_store == "redis":
                    await nonces.redeem_in_redis(jws.nonce, remaining)
                else:
                    spend_in_database = remaining
            ca = cached_acme_ca(ca_name) if method != "POST" and not self.get_reads_database else None
            if ca is not None:
                response = self.get(Request(method, url, AcmeUrls(origin, ca.name), ca, kwargs))
            else:
                response = await dbthread.run(self._process, method, url, origin, ca_name, kwargs, jws,
                                              spend_in_database)
            if response.dispatch or response.validate_here:
                from pki_server.acme.worker import dispatch, validate_here

                for kind, pk in response.dispatch:
                    await dispatch(kind, pk)
                for pk, job in response.validate_here:
                    if not await validate_here(pk, job):  # the worker stopped meanwhile: the sweeper's, after the lease
                        log.warning("No worker here for challenge %s; it is validated after its lease.", pk)
            if response.after_issue is not None:
                response = await self.issued_response(response, *response.after_issue)
        except AcmeProblem as problem:
            response = self.problem_response(problem)
        except ConnectionAbortedError:
            return
        except Exception:
            log.exception("ACME %s %s failed", method, scope.get("path"))
            response = self.problem_response(problems.server_internal())
        await self.send(send, response, origin, ca_name, method)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s in %.1f ms", method, scope["path"], response.status,
                      (time.perf_counter() - started) * 1000)

    @staticmethod
    async def issued_response(response: Response, order_id: int, render: Callable[[], Response]) -> Response:
        """``render()`` once a worker has issued ``order_id``; ``response`` (processing) if it takes too long."""
        from pki_server.acme.worker import wait_issued

        if not await wait_issued(order_id):
            return response
        try:
            return await dbthread.run(render)
        except Exception:  # the order is issued all the same: the client's next poll shows it
            log.exception("Order %s was issued, but reading it back failed", order_id)
            return response

    def _process(self, method: str, url: str, origin: str, ca_name: str | None, kwargs: dict[str, str],
                 jws: jose.JWS | None, spend_in_database: int) -> Response:
        """All database work of one request, in one thread hop: the nonce first (in the database store)."""
        if jws is not None and spend_in_database:
            nonces.redeem_in_database(jws.nonce, spend_in_database)
        ca = acme_ca(ca_name)
        request = Request(method, url, AcmeUrls(origin, ca.name), ca, kwargs, jws)
        if method in ("GET", "HEAD"):
            return self.get(request)
        assert jws is not None
        self.authenticate(request, jws)
        return self.post(request)

    def authenticate(self, request: Request, jws: jose.JWS) -> None:
        """Find the signer's key (RFC 8555 §6.2) and check the signature with it."""
        if jws.jwk is not None:
            if self.signer == "kid":
                raise problems.malformed("This request must be signed by an account (kid), not with a jwk.")
            key = jose.public_key(jws.jwk)
        else:
            if self.signer == "jwk":
                raise problems.malformed("newAccount requests carry the account key as jwk, not a kid.")
            assert jws.kid is not None
            request.account = self.owned_account(request, jws.kid) or accounts.by_kid(request.ca, jws.kid, request.urls)
            key = jose.stored_public_key(request.account.jwk)
        jose.verify(jws, key)

    def owned_account(self, request: Request, kid: str) -> AcmeAccount | None:
        """The signer's account, found with the resource it owns (``Request.owned``); None if not found so."""
        if self.owned_lookup is None:
            return None
        slug = request.urls.account_slug(kid)
        if slug is None:
            return None
        request.owned = self.owned_lookup.all(slug, request.kwargs["slug"])
        return accounts.check(self.owner_of(request.owned[0]), request.ca, kid) if request.owned else None

    @staticmethod
    def owner_of(resource: Any) -> AcmeAccount:
        """The account of what ``owned_lookup`` finds."""
        return resource.account

    def get(self, request: Request) -> Response:
        raise problems.method_not_allowed("GET is not allowed here.")

    def post(self, request: Request) -> Response:
        raise problems.method_not_allowed("POST is not allowed here.")

    # --- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def origin(scope: Scope) -> str:
        """``scheme://host[:port]`` as the client addressed us, checked against ALLOWED_HOSTS."""
        host = header(scope, b"host")
        if not host:
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
        if not host_allowed(host):
            raise problems.malformed(f"The host {host!r} is not served here (PKI_ALLOWED_HOSTS).")
        return f"{scope.get('scheme', 'http')}://{host}"

    @staticmethod
    async def read_body(scope: Scope, receive: Receive) -> bytes:
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise AcmeProblem("malformed", f"The request body is larger than {MAX_BODY} bytes.", 413)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise AcmeProblem("malformed", f"The request body is larger than {MAX_BODY} bytes.", 413)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    def problem_response(problem: AcmeProblem) -> Response:
        return Response(problem.status, problem.to_json(), "application/problem+json", dict(problem.headers))

    @staticmethod
    async def send(send: Send, response: Response, origin: str, ca_name: str | None, method: str) -> None:
        if isinstance(response.body, bytes):
            body = response.body
        elif response.body is None:
            body = b""
        else:
            # Compact: with indent, json.dumps falls back to its pure-Python encoder (RFC 8555 asks no layout).
            body = json.dumps(response.body, separators=(",", ":")).encode("utf-8")
        fields = {
            "content-type": response.content_type,
            "replay-nonce": nonces.make(),
            "cache-control": "no-store",
        }
        if origin:
            directory = f"{origin}/acme/{ca_name}/directory" if ca_name else f"{origin}/acme/directory"
            fields["link"] = ", ".join([f'<{directory}>;rel="index"', *response.links])
        fields.update((name.lower(), value) for name, value in response.headers.items())
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields.items()]
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

"""An in-process ACME client for tests that must see the server's database work from inside.

Requests go straight into the ASGI application (no sockets). Called from a synchronous test
through ``async_to_sync``, the handlers' thread-sensitive database hop runs in the test's own
thread, on the test's database connection: so ``django_assert_num_queries`` sees every query a
request makes, and pytest-django's transaction wraps them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pki_server.acme.jose import b64encode, jwk_from_key

ORIGIN = "http://testserver"


class AsgiAcmeClient:
    def __init__(self, app: Any, ca_name: str = "intermediate") -> None:
        self.app = app
        self.prefix = f"{ORIGIN}/acme/{ca_name}"
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = jwk_from_key(self.key.public_key())
        self.kid: str | None = None
        self.nonce: str | None = None

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
                return await client.request(method, url, **kwargs)

        response: httpx.Response = async_to_sync(send)()
        self.nonce = response.headers.get("Replay-Nonce", self.nonce)
        return response

    def new_nonce(self) -> str:
        self.request("HEAD", f"{self.prefix}/new-nonce")
        assert self.nonce is not None
        return self.nonce

    def sign(self, url: str, payload: dict[str, Any] | None, *, use_jwk: bool = False) -> bytes:
        nonce = self.nonce or self.new_nonce()
        self.nonce = None
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if use_jwk or self.kid is None:
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = self.kid
        protected_b64 = b64encode(json.dumps(protected).encode())
        payload_b64 = "" if payload is None else b64encode(json.dumps(payload).encode())
        der = self.key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return json.dumps({"protected": protected_b64, "payload": payload_b64, "signature": signature}).encode()

    def post(self, url: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        if not url.startswith("http"):
            url = f"{self.prefix}/{url}"
        body = self.sign(url, payload, **kwargs)
        return self.request("POST", url, content=body, headers={"Content-Type": "application/jose+json"})

    def new_account(self) -> httpx.Response:
        response = self.post("new-account", {"termsOfServiceAgreed": True}, use_jwk=True)
        self.kid = response.headers["Location"]
        return response

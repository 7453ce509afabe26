"""The directory (RFC 8555 §7.1.1) and newNonce (§7.2)."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings

from pki_server.acme.handlers.base import AcmeHandler, Request, Response


class DirectoryHandler(AcmeHandler):
    methods: ClassVar[tuple[str, ...]] = ("GET",)

    def get(self, request: Request) -> Response:
        urls, ca = request.urls, request.ca
        meta: dict[str, object] = {
            "website": ca.acme_website or settings.PKI_BASE_URL,
            "caaIdentities": ca.caa_identities,
            "externalAccountRequired": False,
        }
        if ca.acme_terms_of_service:
            meta["termsOfService"] = ca.acme_terms_of_service
        return Response(body={
            "newNonce": urls.new_nonce,
            "newAccount": urls.new_account,
            "newOrder": urls.new_order,
            "revokeCert": urls.revoke_cert,
            "keyChange": urls.key_change,
            "meta": meta,
        }, headers={"Cache-Control": "public, max-age=60"})


class NewNonceHandler(AcmeHandler):
    """HEAD answers 200 and GET 204 (§7.2); the base handler adds the Replay-Nonce."""

    methods: ClassVar[tuple[str, ...]] = ("GET",)

    def get(self, request: Request) -> Response:
        return Response(status=200 if request.method == "HEAD" else 204, content_type="text/plain")

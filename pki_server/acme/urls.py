"""The ACME URL space of one CA, built from the origin the client used.

Every ACME resource lives under ``/acme/<ca>/``; ``/acme/directory`` is the default CA's directory.
The routing table that maps these paths to handlers is in :mod:`pki_server.acme.routing`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AcmeUrls:
    origin: str  # "https://ca.example.com:8443"
    ca_name: str

    @property
    def prefix(self) -> str:
        return f"{self.origin}/acme/{self.ca_name}"

    @property
    def directory(self) -> str:
        return f"{self.prefix}/directory"

    @property
    def new_nonce(self) -> str:
        return f"{self.prefix}/new-nonce"

    @property
    def new_account(self) -> str:
        return f"{self.prefix}/new-account"

    @property
    def new_order(self) -> str:
        return f"{self.prefix}/new-order"

    @property
    def revoke_cert(self) -> str:
        return f"{self.prefix}/revoke-cert"

    @property
    def key_change(self) -> str:
        return f"{self.prefix}/key-change"

    def account(self, slug: str) -> str:
        return f"{self.prefix}/acct/{slug}"

    def account_orders(self, slug: str) -> str:
        return f"{self.prefix}/acct/{slug}/orders"

    def order(self, slug: str) -> str:
        return f"{self.prefix}/order/{slug}"

    def finalize(self, slug: str) -> str:
        return f"{self.prefix}/order/{slug}/finalize"

    def authorization(self, slug: str) -> str:
        return f"{self.prefix}/authz/{slug}"

    def challenge(self, slug: str) -> str:
        return f"{self.prefix}/chall/{slug}"

    def certificate(self, slug: str) -> str:
        return f"{self.prefix}/cert/{slug}"

    def account_slug(self, kid: str) -> str | None:
        """The slug of an account URL of this CA, or None if ``kid`` is not one."""
        head = f"{self.prefix}/acct/"
        if not kid.startswith(head):
            return None
        slug = kid[len(head):]
        return slug if slug and "/" not in slug else None

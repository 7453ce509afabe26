"""Replay nonces (RFC 8555 §6.5): issued without writing anything, redeemed once, at any process.

A nonce is ``base64url(issued-at || random || HMAC(key, issued-at || random)[:16])``. Any process
with the same secret key can check it; redeeming it is one atomic operation — Redis ``SET NX EX``
when ``PKI_REDIS_URL`` is set, otherwise an insert into a table with a unique key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pki_server.acme import problems
from pki_server.acme.jose import b64decode, b64encode

LIFETIME = 3600  # seconds a nonce is good for
_STRUCT = struct.Struct(">Q8s")


@cache
def _key(secret: str) -> bytes:
    return hashlib.sha256(b"pki-server acme nonce\0" + secret.encode("utf-8")).digest()


def make() -> str:
    body = _STRUCT.pack(int(time.time()), os.urandom(8))
    mac = hmac.new(_key(settings.SECRET_KEY), body, hashlib.sha256).digest()[:16]
    return b64encode(body + mac)


def check(nonce: str) -> int:
    """Seconds the nonce stays good for; raises badNonce if it was not made here or is too old.

    RFC 8555 §6.5.2: a nonce that is not unpadded base64url at all is malformed, not badNonce.
    """
    raw = b64decode(nonce, "The nonce")
    if len(raw) != 32:
        raise problems.bad_nonce("The nonce was not issued by this server.")
    body, mac = raw[:16], raw[16:]
    if not hmac.compare_digest(mac, hmac.new(_key(settings.SECRET_KEY), body, hashlib.sha256).digest()[:16]):
        raise problems.bad_nonce("The nonce was not issued by this server.")
    issued, _ = _STRUCT.unpack(body)
    remaining = issued + LIFETIME - int(time.time())
    if remaining <= 0:
        raise problems.bad_nonce("The nonce has expired; use the one from the last response.")
    return remaining


def redeem_in_database(nonce: str, remaining: int) -> None:
    """Spend a nonce in the database: the primary key makes a second use fail."""
    from pki_server.acme.models import AcmeNonce

    expires = timezone.now() + timedelta(seconds=remaining + 60)
    connection = transaction.get_connection()
    # Written as SQL: the ORM's create() costs ten times the INSERT itself, on every ACME POST.
    sql = f"INSERT INTO {connection.ops.quote_name(AcmeNonce._meta.db_table)} (nonce, expires) VALUES (%s, %s)"  # noqa: S608 - a model's table
    params = (nonce, connection.ops.adapt_datetimefield_value(expires))
    # In autocommit mode the INSERT is a transaction of its own (one statement, not three); inside
    # an atomic block a savepoint keeps a duplicate from breaking the outer transaction.
    try:
        if connection.in_atomic_block:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
    except IntegrityError:
        raise problems.bad_nonce("The nonce has been used already; use the one from the last response.") from None


async def redeem_in_redis(nonce: str, remaining: int) -> None:
    from pki_server.redis import get_redis

    stored = await get_redis().set(f"pki:acme:nonce:{nonce}", b"1", nx=True, ex=remaining + 60)
    if not stored:
        raise problems.bad_nonce("The nonce has been used already; use the one from the last response.")


def prune_database() -> int:
    """Delete spent nonces that can no longer be replayed anyway."""
    from pki_server.acme.models import AcmeNonce

    deleted, _ = AcmeNonce.objects.filter(expires__lt=timezone.now()).delete()
    return deleted

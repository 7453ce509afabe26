"""Replay nonces (RFC 8555 §6.5): issued without writing anything, redeemed once.

A nonce is ``base64url(issued-at || serial || MAC(key, issued-at || serial))``: it is checked
without a lookup, and redeeming it is one atomic operation in the store ``PKI_ACME_NONCE_STORE``
names (``auto`` picks the first that fits):

- ``redis`` (auto when ``PKI_REDIS_URL`` is set): ``SET NX EX`` of the nonce. Any process sharing
  the secret key accepts any other's nonces — what several web processes behind a balancer need.
- ``memory`` (auto when the database is SQLite, i.e. the embedded server: one web process): the
  key is this process's own random key and the serial a counter, so a nonce is good only at the
  process that made it, and only until it stops; a bitmap over the last ``WINDOW`` serials records
  which were spent. Nothing is written anywhere, and the memory used is fixed (``WINDOW`` bits).
- ``database`` (auto otherwise): an insert into a table whose primary key is the nonce, so a
  second use fails; the worker's sweeper deletes expired ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pki_server.acme import problems
from pki_server.acme.jose import b64decode, b64encode

LIFETIME = 3600  # seconds a nonce is good for
_STRUCT = struct.Struct(">QQ")  # issued-at, serial (random, or the memory store's counter)
USED = "The nonce has been used already; use the one from the last response."


def store() -> str:
    """The store nonces are redeemed in: "redis", "memory" or "database" (PKI_ACME_NONCE_STORE)."""
    chosen = settings.PKI_ACME_NONCE_STORE
    if chosen != "auto":
        return chosen
    if settings.PKI_REDIS_URL:
        return "redis"
    return "memory" if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") else "database"


def mac(key: bytes, body: bytes) -> bytes:
    """The nonce's 16-byte MAC: keyed BLAKE2b (RFC 7693 §2.5).

    Not HMAC-SHA256: Python's ``hmac.digest`` goes to OpenSSL 3, whose one-shot HMAC looks the
    digest up afresh on every call and releases the GIL around it. Two MACs per ACME request cost
    about 30 µs each that way in the server, against about 1 µs for hashlib's built-in BLAKE2b,
    which is a MAC by design when given a key.
    """
    return hashlib.blake2b(body, key=key, digest_size=16).digest()


@cache
def _shared_key(secret: str) -> bytes:
    return hashlib.sha256(b"pki-server acme nonce\0" + secret.encode("utf-8")).digest()


class MemoryNonces:
    """This process's nonces: its own key, a counter, and a bitmap of spent ones over a window."""

    WINDOW = 1 << 20  # serials: 128 KiB; at 1,000 nonces a second, one stays redeemable for 17 minutes

    def __init__(self) -> None:
        self.key = os.urandom(32)
        self.next = 0
        self.spent = bytearray(self.WINDOW // 8)
        self.lock = threading.Lock()

    def serial(self) -> int:
        with self.lock:
            serial = self.next
            self.next += 1
            self.spent[(serial % self.WINDOW) >> 3] &= ~(1 << (serial & 7)) & 0xFF
            return serial

    def redeem(self, serial: int) -> None:
        with self.lock:
            if serial >= self.next:
                raise problems.bad_nonce("The nonce was not issued by this server.")
            if serial < self.next - self.WINDOW:
                raise problems.bad_nonce("The nonce has expired; use the one from the last response.")
            index, bit = (serial % self.WINDOW) >> 3, 1 << (serial & 7)
            if self.spent[index] & bit:
                raise problems.bad_nonce(USED)
            self.spent[index] |= bit


_memory: MemoryNonces | None = None


def memory() -> MemoryNonces:
    """This process's memory store (a forked child starts a new one: it must not share its parent's)."""
    global _memory
    if _memory is None:
        _memory = MemoryNonces()
    return _memory


def _forget_after_fork() -> None:
    global _memory
    _memory = None


os.register_at_fork(after_in_child=_forget_after_fork)


def make() -> str:
    if store() == "memory":
        state = memory()
        key, serial = state.key, state.serial()
    else:
        key, serial = _shared_key(settings.SECRET_KEY), int.from_bytes(os.urandom(8), "big")
    body = _STRUCT.pack(int(time.time()), serial)
    return b64encode(body + mac(key, body))


def check(nonce: str) -> int:
    """Seconds the nonce stays good for; raises badNonce if it was not made here or is too old.

    RFC 8555 §6.5.2: a nonce that is not unpadded base64url at all is malformed, not badNonce.
    """
    raw = b64decode(nonce, "The nonce")
    if len(raw) != 32:
        raise problems.bad_nonce("The nonce was not issued by this server.")
    body, tag = raw[:16], raw[16:]
    key = memory().key if store() == "memory" else _shared_key(settings.SECRET_KEY)
    if not hmac.compare_digest(tag, mac(key, body)):
        raise problems.bad_nonce("The nonce was not issued by this server.")
    issued, _ = _STRUCT.unpack(body)
    remaining = issued + LIFETIME - int(time.time())
    if remaining <= 0:
        raise problems.bad_nonce("The nonce has expired; use the one from the last response.")
    return remaining


def redeem_in_memory(nonce: str) -> None:
    """Spend a nonce this process made (``check`` first): the first use wins, a second is badNonce."""
    _issued, serial = _STRUCT.unpack(b64decode(nonce, "The nonce")[:16])
    memory().redeem(serial)


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
        raise problems.bad_nonce(USED) from None


async def redeem_in_redis(nonce: str, remaining: int) -> None:
    from pki_server.redis import get_redis

    stored = await get_redis().set(f"pki:acme:nonce:{nonce}", b"1", nx=True, ex=remaining + 60)
    if not stored:
        raise problems.bad_nonce(USED)


def prune_database() -> int:
    """Delete spent nonces that can no longer be replayed anyway."""
    from pki_server.acme.models import AcmeNonce

    deleted, _ = AcmeNonce.objects.filter(expires__lt=timezone.now()).delete()
    return deleted

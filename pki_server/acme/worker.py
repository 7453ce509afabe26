"""The ACME worker: validations and issuance, off the request path.

Web processes send a wake-up message naming a challenge or an order: on the in-memory channel
layer when embedded, on a Redis list (``LPUSH``, taken by ``BRPOP``) when ``PKI_REDIS_URL`` is set.
Any worker may receive it; it claims the row with a lease (orders.claim), does the work, and
records the outcome. A message is only a wake-up: the sweeper finds processing rows that nobody
claimed in time, or whose worker died with the lease, and sends them again — so a lost message or a
killed worker never loses an order. That is why the scaled queue is a plain list: channels_redis's
delivery machinery (about ten Redis commands per message: capacity, expiry, a backup set for
at-least-once) bought nothing here, and cost 8 % of the scaled topology's CPU. The other way, a
worker that has issued an order tells the finalize waiting for it (wait_issued / notify_issued).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from pki_server import dbthread
from pki_server.acme import jose, lookups, nonces, orders, problems
from pki_server.acme.challenges import VALIDATORS
from pki_server.acme.models import AcmeAccount, AcmeChallenge, AcmeOrder
from pki_server.acme.validation.base import ValidationConfig, ValidationError, ValidationRecord
from pki_server.acme.validation.caa import check_caa
from pki_server.core import crl, ocsp_responder
from pki_server.core.models import CertificateAuthority

log = logging.getLogger("pki_server.acme.worker")

CHANNEL = "pki-acme-worker"  # embedded: the in-memory channel layer's channel
WORK_KEY = "pki:acme:work"  # scaled: the Redis list of wake-ups
WORK_KEY_MAX = 10_000  # wake-ups kept at most while no worker takes them; the sweeper resends dropped ones
RECEIVE_WAIT = 1  # seconds one BRPOP waits (redis-py's socket timeout is longer)
ISSUED_KEY = "pki:acme:issued:{}"  # scaled: a worker's word that an order's issuance is over, for its finalize
ISSUED_TTL = 30  # seconds that word waits for a finalize that has not started waiting yet
FINALIZE_WAIT = 2.0  # seconds a finalize waits for the worker before it answers "processing"
MAX_WAITING = 64  # finalizes one process keeps waiting at once (each holds a Redis connection)
DISPATCH_GRACE = timedelta(seconds=15)  # a message not picked up by then is sent again
SWEEP_INTERVAL = 5.0  # seconds
MAX_CONCURRENT = 64  # validations and issuances one worker runs at once


async def dispatch(kind: str, pk: int) -> None:
    """Wake a worker; losing this message only delays the work until the sweeper's next round."""
    message = {"type": f"acme.{kind}", "id": pk}
    try:
        if settings.PKI_REDIS_URL:
            from pki_server.redis import get_redis

            pipeline = get_redis().pipeline(transaction=False)  # one round trip
            pipeline.lpush(WORK_KEY, json.dumps(message))
            pipeline.ltrim(WORK_KEY, 0, WORK_KEY_MAX - 1)
            await pipeline.execute()
        else:
            await get_channel_layer().send(CHANNEL, message)
    except ChannelFull:
        log.warning("The worker channel is full; the sweeper will dispatch %s %s.", kind, pk)
    except Exception:
        log.exception("Could not dispatch %s %s; the sweeper will.", kind, pk)


_waiting = 0  # finalizes of this process waiting for a worker now


async def wait_issued(order_id: int) -> bool:
    """Scaled: wait (FINALIZE_WAIT at most) for a worker to finish issuing ``order_id``.

    The finalize that sent the order to a worker can then answer with the order valid (or invalid),
    as the embedded server does, instead of "processing": the client is spared a poll and its
    interval. False when no word came in time, or the wait is not possible (no Redis, MAX_WAITING
    reached, Redis failing): the client polls then, as RFC 8555 §7.4 has it.
    """
    global _waiting
    if not settings.PKI_REDIS_URL or _waiting >= MAX_WAITING:
        return False
    from pki_server.redis import get_redis

    _waiting += 1
    try:
        async with asyncio.timeout(FINALIZE_WAIT + 1):  # a Redis that stops answering must not hold the request
            return await get_redis().blpop([ISSUED_KEY.format(order_id)], timeout=FINALIZE_WAIT) is not None
    except Exception:
        log.warning("Could not wait for the issuance of order %s; the client polls.", order_id, exc_info=True)
        return False
    finally:
        _waiting -= 1


async def notify_issued(order_id: int) -> None:
    """Scaled: tell a finalize waiting in any web process (wait_issued) that ``order_id`` is issued or failed."""
    if not settings.PKI_REDIS_URL:
        return
    from pki_server.redis import get_redis

    key = ISSUED_KEY.format(order_id)
    try:
        pipeline = get_redis().pipeline(transaction=False)  # one round trip
        pipeline.lpush(key, 1)
        pipeline.expire(key, ISSUED_TTL)
        await pipeline.execute()
    except Exception:
        log.warning("Could not announce the issuance of order %s; its client polls.", order_id, exc_info=True)


def validation_config() -> ValidationConfig:
    return ValidationConfig(
        http01_port=settings.PKI_ACME_HTTP01_PORT,
        tlsalpn01_port=settings.PKI_ACME_TLSALPN01_PORT,
        resolvers=settings.PKI_ACME_DNS_RESOLVERS,
        deny_networks=settings.PKI_ACME_VALIDATION_DENY_NETWORKS,
        allow_networks=settings.PKI_ACME_VALIDATION_ALLOW_NETWORKS,
        total_timeout=float(settings.PKI_ACME_VALIDATION_TIMEOUT),
        connect_timeout=min(5.0, float(settings.PKI_ACME_VALIDATION_TIMEOUT)),
        dns_timeout=min(5.0, float(settings.PKI_ACME_VALIDATION_TIMEOUT)),
    )


_here: list[Worker] = []  # the workers running in this process (the embedded `serve` runs one)


def runs_here() -> bool:
    """Whether this process runs a worker that issues, so holds what signing needs (the embedded
    `serve`); a web process's validator (``Worker(receive=False)``) issues nothing."""
    return any(worker.receives for worker in _here)


def validation_lease(config: ValidationConfig) -> timedelta:
    # CAA and the validation each get total_timeout; the lease outlasts both.
    return timedelta(seconds=config.total_timeout * 2 + 5)


def local_validation_lease() -> timedelta | None:
    """The lease a validation run by this process's worker takes; None when no worker runs here."""
    return validation_lease(_here[0].config) if _here else None


@dataclass(frozen=True)
class ValidationJob:
    kind: str
    identifier: str
    wildcard: bool
    token: str
    key_authorization: str
    caa_identities: list[str]
    account_uri: str | None


def job_for(challenge: AcmeChallenge, account: AcmeAccount, ca: CertificateAuthority) -> ValidationJob:
    """What validating ``challenge`` needs, from rows already loaded (its authorization with it)."""
    authz = challenge.authorization
    return ValidationJob(
        kind=challenge.type,
        identifier=authz.identifier,
        wildcard=authz.wildcard,
        token=challenge.token,
        key_authorization=jose.key_authorization(challenge.token, json.loads(account.jwk)),
        caa_identities=ca.caa_identities,
        account_uri=challenge.account_uri or None,
    )


def _claim_challenge(challenge_id: int, lease: timedelta) -> ValidationJob | None:
    if not orders.claim(AcmeChallenge, challenge_id, lease):
        return None
    challenge = lookups.challenge_for_validation.one(challenge_id)
    if challenge is None:
        return None
    return job_for(challenge, challenge.authorization.account, challenge.authorization.account.ca)


async def validate(challenge_id: int, config: ValidationConfig, job: ValidationJob | None = None) -> None:
    """Validate a processing challenge: claimed here first, unless ``job`` says the caller claimed it."""
    if job is None:
        job = await dbthread.run(_claim_challenge, challenge_id, validation_lease(config))
        if job is None:
            return
    kind, identifier = job.kind, job.identifier
    validator = VALIDATORS.get(kind)
    records: list[dict[str, Any]] = []
    error = None
    try:
        if validator is None:
            raise ValidationError("serverInternal", f"This server cannot validate {kind} challenges.")

        async def caa_then_validate() -> list[ValidationRecord]:
            # RFC 8659: CAA before issuance; checked first, so a refusal fails fast.
            await check_caa(identifier, wildcard=job.wildcard, identities=job.caa_identities,
                            account_uri=job.account_uri, method=kind, config=config)
            return await validator(identifier, job.token, job.key_authorization, config)

        result = await asyncio.wait_for(caa_then_validate(), timeout=2 * config.total_timeout + 5)
        records = [record.to_json() for record in result]
    except ValidationError as ex:
        records = [record.to_json() for record in ex.records]
        error = problems.problem_json(ex.problem_type, ex.detail, 400)
    except TimeoutError:
        error = problems.problem_json("connection", f"The {kind} validation of {identifier} timed out.", 400)
    except asyncio.CancelledError:
        # The worker is stopping: hand the challenge back now rather than when the lease runs out.
        await asyncio.shield(dbthread.run(orders.release, AcmeChallenge, challenge_id))
        raise
    except Exception:
        log.exception("Validation of challenge %s failed unexpectedly", challenge_id)
        error = problems.problem_json("serverInternal", "The validation failed on the server's side.", 500)
    stored = await dbthread.run(orders.finish_validation, challenge_id, error is None, records or None, error)
    if stored:
        log.info("%s %s for %s: %s", kind, "valid" if error is None else "invalid", identifier,
                 error["detail"] if error else "ok")


def _claim_and_issue(order_id: int) -> bool:
    """Whether this worker claimed the order and took it out of processing (issued, or failed)."""
    if not orders.claim(AcmeOrder, order_id, orders.ISSUE_LEASE):
        return False
    order = orders.issue(order_id)
    return order is not None and order.status != AcmeOrder.STATUS_PROCESSING


async def issue(order_id: int) -> None:
    if await dbthread.run(_claim_and_issue, order_id):
        await notify_issued(order_id)


def _sweep() -> list[tuple[str, int]]:
    work = [("validate", pk) for pk in orders.stale_work(AcmeChallenge, DISPATCH_GRACE)]
    work += [("issue", pk) for pk in orders.stale_work(AcmeOrder, DISPATCH_GRACE)]
    if nonces.store() == "database":
        nonces.prune_database()
    # Revocation status, where this process holds the CA keys: CRLs re-signed after revocations
    # made elsewhere and before nextUpdate; delegated OCSP responders made and renewed.
    crl.refresh_crls()
    ocsp_responder.refresh_ocsp_responders()
    return work


class Worker:
    """Receives wake-ups and runs each as a task, at most MAX_CONCURRENT at once.

    With ``receive=False`` it is a web process's validator (`serve --no-worker`): it receives no
    wake-ups and issues nothing, and only runs the validations of the challenges that this
    process's requests claimed (validate_claimed). A validation needs no CA key, and run where the
    challenge was claimed it saves a wake-up, a second claim and a thread hop in a worker. Should
    the process die mid-validation, the challenge's lease runs out and a worker's sweeper hands it
    on, as for a worker that dies.
    """

    def __init__(self, *, sweep: bool = True, receive: bool = True) -> None:
        self.sweep = sweep and receive
        self.receives = receive
        self.config = validation_config()
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def run(self) -> None:
        _here.append(self)
        try:
            if self.receives:
                await self._run()
            else:
                log.info("ACME validator running: challenges started here are validated here.")
                await asyncio.Event().wait()  # until cancelled; the work comes through validate_claimed
        finally:
            _here.remove(self)
            running = list(self.tasks)
            for task in running:
                task.cancel()
            if running:  # let them hand their work back (bounded: a stop must not hang)
                await asyncio.wait(running, timeout=5)

    async def validate_claimed(self, challenge_id: int, job: ValidationJob) -> None:
        """Run a validation whose challenge the caller claimed (``start_challenge`` with a lease) in this process."""
        await self._start(lambda: self._guarded(validate(challenge_id, self.config, job),
                                                f"validation of challenge {challenge_id}"))

    async def _start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as a task once one of the MAX_CONCURRENT slots is free."""
        await self.slots.acquire()
        task = asyncio.create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    async def _run(self) -> None:
        if settings.PKI_REDIS_URL:
            receive, source = _receive_from_redis, f"the Redis list {WORK_KEY}"
        else:
            receive, source = functools.partial(get_channel_layer().receive, CHANNEL), f"the channel {CHANNEL}"
        sweeper = asyncio.create_task(self.sweeper()) if self.sweep else None
        me = asyncio.current_task()
        log.info("ACME worker listening on %s.", source)
        try:
            while True:
                failure: Exception | None = None
                try:
                    message = await receive()
                except Exception as ex:  # Redis restarting, a network blip: the sweeper covers what is missed meanwhile
                    message, failure = None, ex
                # redis-py can swallow a cancellation that lands mid-command (the command then returns or
                # fails): a stop must still stop the worker.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                if failure is not None:
                    log.error("Could not receive from %s; trying again in 1 s.", source, exc_info=failure)
                    await asyncio.sleep(1)
                elif message is not None:
                    await self._start(functools.partial(self.handle, message))
        finally:
            if sweeper is not None:
                sweeper.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    async def handle(self, message: dict[str, Any]) -> None:
        kind, pk = message.get("type"), message.get("id")
        if not isinstance(pk, int):
            log.warning("Ignoring a malformed worker message: %r", message)
        elif kind == "acme.validate":
            await self._guarded(validate(pk, self.config), f"worker message {message!r}")
        elif kind == "acme.issue":
            await self._guarded(issue(pk), f"worker message {message!r}")
        else:
            log.warning("Ignoring a worker message of unknown type %r", kind)

    @staticmethod
    async def _guarded(work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            log.exception("The %s failed; the sweeper will retry it.", what)

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                for kind, pk in await dbthread.run(_sweep):
                    log.info("Re-dispatching %s %s.", kind, pk)
                    await dispatch(kind, pk)
            except Exception:
                log.exception("The sweeper failed; it tries again in %s s.", SWEEP_INTERVAL)


async def _receive_from_redis() -> dict[str, Any] | None:
    """The next wake-up on the Redis list, or None after RECEIVE_WAIT seconds without one."""
    from pki_server.redis import get_redis

    item = await get_redis().brpop([WORK_KEY], timeout=RECEIVE_WAIT)
    if item is None:
        return None
    try:
        message = json.loads(item[1])
    except ValueError:
        message = item[1]
    return message if isinstance(message, dict) else {"malformed": message}


async def validate_here(challenge_id: int, job: ValidationJob) -> bool:
    """Hand a challenge claimed in this process to this process's worker; False when none runs here."""
    if not _here:
        return False
    await _here[0].validate_claimed(challenge_id, job)
    return True

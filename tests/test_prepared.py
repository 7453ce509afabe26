"""pki_server/prepared.py: compiled lookups give exactly what the ORM gives, in the same queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pki_server.acme import lookups
from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.core.models import CertificateAuthority
from pki_server.prepared import Prepared

pytestmark = pytest.mark.django_db


def fields(obj: object) -> dict[str, object]:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}  # type: ignore[attr-defined]


@pytest.fixture
def rows(intermediate: CertificateAuthority) -> AcmeOrder:
    account = AcmeAccount.objects.create(ca=intermediate, thumbprint="t", jwk="{}", contact=["mailto:a@example.com"])
    expires = timezone.now() + timedelta(days=1)
    authzs = [AcmeAuthorization.objects.create(account=account, identifier=f"{n}.example", expires=expires)
              for n in ("a", "b")]
    for authz in authzs:
        for kind in ("http-01", "dns-01"):
            AcmeChallenge.objects.create(authorization=authz, type=kind, error={"type": "x", "detail": "é"})
    order = AcmeOrder.objects.create(account=account, identifiers=[{"type": "dns", "value": "a.example"}],
                                     expires=expires)
    order.authorizations.set(authzs)
    return order


def test_same_objects_as_the_orm(rows: AcmeOrder) -> None:
    authz = rows.authorizations.order_by("pk").first()
    assert authz is not None
    for _ in range(2):  # the first call compiles, the second runs the kept SQL
        account = lookups.account_by_slug.one(rows.account.slug)
        assert account is not None and fields(account) == fields(AcmeAccount.objects.get(pk=rows.account_id))
        assert isinstance(account.created, type(timezone.now())) and timezone.is_aware(account.created)
        assert account.contact == ["mailto:a@example.com"]  # JSON decoded
        order = lookups.order_by_slug.one(rows.slug)
        assert order is not None and fields(order) == fields(AcmeOrder.objects.get(pk=rows.pk))
        challenges = lookups.challenges_of_authorization.all(authz.slug)
        assert [fields(c) for c in challenges] == [fields(c) for c in authz.challenges.order_by("pk")]
        assert all(fields(c.authorization) == fields(authz) for c in challenges)  # select_related
        assert challenges[0].error == {"type": "x", "detail": "é"}
        assert [a.pk for a in lookups.authorizations_of_order.all(rows.pk)] == sorted(
            rows.authorizations.values_list("pk", flat=True))
    assert lookups.order_by_slug.one("no-such-slug") is None
    assert lookups.challenges_of_authorization.all("no-such-slug") == []


def test_rows_become_the_instances_the_orm_builds(rows: AcmeOrder) -> None:
    """The shortcuts of _build (attributes stored at once) and of SQLite's datetime converter."""
    AcmeOrder.objects.filter(pk=rows.pk).update(processing_since=timezone.now(), not_before=None,
                                                 lease_until=timezone.now().replace(microsecond=0))
    orm = AcmeOrder.objects.get(pk=rows.pk)
    for _ in range(2):
        order = lookups.order_by_slug.one(rows.slug)
        assert order is not None and fields(order) == fields(orm)
        assert vars(order).keys() == vars(orm).keys()  # nothing more, nothing less than Model.__init__ sets
        assert (order._state.adding, order._state.db) == (False, "default")
        assert order.lease_until == orm.lease_until and order.lease_until.tzinfo is not None  # whole seconds
        assert order.account == orm.account and order.not_before is None  # the foreign key, a NULL datetime
        order.status = "ready"
        order.save(update_fields=["status"])  # a usable instance
        assert AcmeOrder.objects.get(pk=rows.pk).status == "ready"
        AcmeOrder.objects.filter(pk=rows.pk).update(status=orm.status)


def test_init_signals_still_reach_their_receivers(rows: AcmeOrder) -> None:
    from django.db.models.signals import post_init

    seen: list[int] = []

    def receiver(sender: type[AcmeOrder], instance: AcmeOrder, **kwargs: object) -> None:
        seen.append(instance.pk)

    lookups.order_by_slug.one(rows.slug)
    post_init.connect(receiver, sender=AcmeOrder)
    try:
        order = lookups.order_by_slug.one(rows.slug)
    finally:
        post_init.disconnect(receiver, sender=AcmeOrder)
    assert order is not None and seen == [rows.pk]


@pytest.mark.parametrize("use_tz", [True, False])
def test_sqlite_datetimes_convert_as_django_converts_them(use_tz: bool, settings: Any) -> None:
    from django.db.models.expressions import Col

    from pki_server.prepared import _converter

    connection = connections["default"]
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's converter")
    settings.USE_TZ = use_tz
    compiler = AcmeOrder.objects.all().query.get_compiler(using="default")
    expression = Col("pki_acme_acmeorder", AcmeOrder._meta.get_field("expires"))
    django_converter = connection.ops.convert_datetimefield_value
    ours = _converter(compiler, [django_converter], expression)
    assert ours.__name__ == "convert_datetime"
    aware = timezone.now()
    for value in ("2026-11-29 06:13:41", "2026-11-29 06:13:41.123456", "2026-11-29T06:13:41+02:00", None,
                  aware.replace(tzinfo=None), aware if use_tz else aware.replace(tzinfo=None)):
        expected = django_converter(value, expression, connection)
        assert ours(value) == expected and getattr(ours(value), "tzinfo", None) == getattr(expected, "tzinfo", None)


def test_compiled_once_then_one_query_each(rows: AcmeOrder) -> None:
    lookups.order_by_slug.one(rows.slug)
    assert lookups.order_by_slug._plans.get(connections["default"]) is not None  # the SQL is kept
    with CaptureQueriesContext(connections["default"]) as queries:
        for _ in range(3):
            assert lookups.order_by_slug.one(rows.slug) is not None
    assert len(queries) == 3
    assert all("WHERE" in q["sql"] and rows.slug in q["sql"] for q in queries.captured_queries)


def test_every_acme_lookup_is_cacheable(rows: AcmeOrder) -> None:
    """A builder whose parameters the ORM reorders would silently fall back to the slow path."""
    authz = rows.authorizations.first()
    challenge = AcmeChallenge.objects.first()
    assert authz is not None and challenge is not None
    calls = {
        lookups.account_by_slug: rows.account.slug, lookups.order_by_slug: rows.slug,
        lookups.order_with_certificate: rows.slug, lookups.authorization_by_slug: authz.slug,
        lookups.challenges_of_authorization: authz.slug, lookups.challenge_by_slug: challenge.slug,
        lookups.authorizations_of_order: rows.pk, lookups.challenge_for_validation: challenge.pk,
        lookups.challenge_with_authorization: challenge.pk, lookups.order_for_issuance: rows.pk,
    }
    owned = {
        lookups.owned_order: rows.slug, lookups.owned_order_with_certificate: rows.slug,
        lookups.owned_challenges_of_authorization: authz.slug, lookups.owned_challenge: challenge.slug,
    }
    assert len(calls) + len(owned) + 1 == len([v for v in vars(lookups).values() if isinstance(v, Prepared)])
    for lookup, value in calls.items():
        assert lookup.all(value)
        assert lookup._plans.get(connections["default"]) is not None, lookup.build
    for lookup, value in owned.items():  # (the account's slug, the resource's)
        assert lookup.all(rows.account.slug, value)
        assert lookup.all("another-account", value) == []
        assert lookup._plans.get(connections["default"]) is not None, lookup.build
    assert [o.pk for o in lookups.orders_of_authorization.all(authz.pk, "pending")] == [rows.pk]
    assert lookups.orders_of_authorization._plans.get(connections["default"]) is not None
    assert lookups.orders_of_authorization.all(authz.pk, "ready") == []
    for wildcard in (True, False):
        lookup = lookups.reusable_authorization[wildcard]
        found = lookup.one(rows.account_id, "dns", authz.identifier, "valid", "pending")
        assert (found.pk if found else None) == (None if wildcard else authz.pk)
        assert lookups.reusable_authorization[wildcard]._plans.get(connections["default"]) is not None


def test_parameters_in_another_order_are_not_cached(rows: AcmeOrder) -> None:
    # Django sorts filter() keyword arguments: (slug, ca) compiles to (ca_id, slug).
    lookup: Prepared[AcmeAccount] = Prepared(
        lambda slug, ca_id: AcmeAccount.objects.filter(slug=slug, ca_id=ca_id).order_by()[:1])
    for _ in range(2):
        found = lookup.one(rows.account.slug, rows.account.ca_id)
        assert found is not None and found.pk == rows.account_id
    assert lookup._plans.get(connections["default"]) is None  # ran as a QuerySet both times, correctly
    assert lookup.one("nope", rows.account.ca_id) is None


def test_inside_a_transaction_sees_its_own_writes(rows: AcmeOrder) -> None:
    lookups.order_by_slug.one(rows.slug)
    with transaction.atomic():
        AcmeOrder.objects.filter(pk=rows.pk).update(status="ready")
        order = lookups.order_by_slug.one(rows.slug)
        assert order is not None and order.status == "ready"
        transaction.set_rollback(True)
    order = lookups.order_by_slug.one(rows.slug)
    assert order is not None and order.status == "pending"


def test_conditional_update_writes_what_queryset_update_writes(rows: AcmeOrder) -> None:
    from pki_server.prepared import conditional_update

    now = timezone.now()
    twin = AcmeOrder.objects.create(account=rows.account, identifiers=rows.identifiers, expires=rows.expires)
    values = {"status": "invalid", "error": {"type": "urn:x", "detail": "é"}, "processing_since": now}
    assert conditional_update(AcmeOrder, rows.pk, values, status="pending") == 1
    AcmeOrder.objects.filter(pk=twin.pk, status="pending").update(**values)
    mine, theirs = AcmeOrder.objects.get(pk=rows.pk), AcmeOrder.objects.get(pk=twin.pk)
    assert {k: getattr(mine, k) for k in values} == {k: getattr(theirs, k) for k in values} == values
    # JSON null (SQL NULL, as update() writes it) and a cleared datetime.
    assert conditional_update(AcmeOrder, rows.pk, {"error": None, "processing_since": None}) == 1
    assert AcmeOrder.objects.filter(pk=rows.pk, error__isnull=True, processing_since__isnull=True).exists()
    # The state condition: a row not in the expected state is left alone.
    assert conditional_update(AcmeOrder, rows.pk, {"status": "ready"}, status="pending") == 0
    assert AcmeOrder.objects.get(pk=rows.pk).status == "invalid"
    # A free condition with a datetime parameter (the claim's lease).
    later = now + timedelta(seconds=30)
    lease = {"condition": "lease_until IS NULL OR lease_until < %s", "condition_params": (now,)}
    assert conditional_update(AcmeOrder, rows.pk, {"lease_until": later}, status="invalid", **lease) == 1
    assert conditional_update(AcmeOrder, rows.pk, {"lease_until": later}, status="invalid", **lease) == 0
    assert AcmeOrder.objects.get(pk=rows.pk).lease_until == later


def test_insert_writes_what_create_writes(rows: AcmeOrder) -> None:
    from pki_server.prepared import insert

    expires = timezone.now() + timedelta(days=2)
    mine = AcmeAuthorization(account=rows.account, identifier="i.example", wildcard=True, expires=expires)
    insert([mine])
    theirs = AcmeAuthorization.objects.create(account=rows.account, identifier="i.example", wildcard=True,
                                              expires=expires)
    assert mine.pk is not None and not mine._state.adding
    stored, reference = AcmeAuthorization.objects.get(pk=mine.pk), AcmeAuthorization.objects.get(pk=theirs.pk)
    differ = {"id", "slug", "created"}  # each row's own key, random slug and creation time
    assert {k: v for k, v in fields(stored).items() if k not in differ} == \
        {k: v for k, v in fields(reference).items() if k not in differ}
    assert stored.slug == mine.slug and len(stored.slug) == len(reference.slug)  # the default was made once
    # Several rows in one statement, keys in order; JSON and NULL values.
    challenges = [AcmeChallenge(authorization=mine, type=kind, error=error)
                  for kind, error in (("http-01", None), ("dns-01", {"type": "t", "detail": "ü"}))]
    insert(challenges)
    assert [c.pk for c in challenges] == sorted(c.pk for c in challenges)
    assert [(c.type, c.error) for c in AcmeChallenge.objects.filter(authorization=mine).order_by("pk")] == [
        ("http-01", None), ("dns-01", {"type": "t", "detail": "ü"})]
    assert AcmeChallenge.objects.filter(authorization=mine, error__isnull=True).count() == 1
    # A through row of a many-to-many relation.
    insert([AcmeOrder.authorizations.through(acmeorder=rows, acmeauthorization=mine)])
    assert mine in rows.authorizations.all()


def test_insert_sends_save_signals_when_asked(intermediate: CertificateAuthority) -> None:
    """create_cert inserts through prepared.insert: receivers of post_save see what save() would show them."""
    from django.db.models.signals import post_save, pre_save

    from pki_server.core.key_backends.storages import UsePrivateKeyOptions
    from pki_server.core.models import Certificate
    from tests.fixtures import make_csr

    seen: list[tuple[str, object, bool | None, bool]] = []

    def before(sender: type, instance: Certificate, **kwargs: object) -> None:
        seen.append(("pre", instance.serial, None, instance.pk is None))

    def after(sender: type, instance: Certificate, created: bool, **kwargs: object) -> None:
        seen.append(("post", instance.serial, created, instance.pk is None))

    pre_save.connect(before, sender=Certificate)
    post_save.connect(after, sender=Certificate)
    try:
        cert = Certificate.objects.create_cert(intermediate, UsePrivateKeyOptions(password=None), make_csr(),
                                               "/CN=signals.example.com")
    finally:
        pre_save.disconnect(before, sender=Certificate)
        post_save.disconnect(after, sender=Certificate)
    assert seen == [("pre", cert.serial, None, True), ("post", cert.serial, True, False)]
    stored = Certificate.objects.get(pk=cert.pk)
    assert fields(stored) == fields(cert) | {"der": stored.der}  # memoryview from the database, bytes in memory
    assert bytes(stored.der) == bytes(cert.der) and stored.sans == "DNS:signals.example.com"


def test_execute_outside_query_logging_takes_the_driver_cursor(rows: AcmeOrder) -> None:
    """Without DEBUG or assertNumQueries, execute() skips Django's cursor and must give the same answers."""
    from django.db import IntegrityError
    from django.db.transaction import TransactionManagementError

    from pki_server.prepared import execute

    connection = connections["default"]
    assert not connection.queries_logged and not connection.execute_wrappers
    # Placeholders, and a literal percent sign written as Django writes it.
    assert execute(connection, "SELECT '100%%' || %s, %s", ["x", 2], fetch=True) == [("100%x", 2)]
    table = AcmeOrder._meta.db_table
    assert execute(connection, f"UPDATE {table} SET status = %s WHERE id = %s", ["ready", rows.pk], fetch=False) == 1
    assert AcmeOrder.objects.get(pk=rows.pk).status == "ready"
    # A driver error is django.db's, and a transaction it broke (an inner block without a savepoint
    # let it out) refuses the next statement.
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic(savepoint=False):
            execute(connection, f"UPDATE {table} SET slug = %s WHERE id = %s", [None, rows.pk], fetch=False)
        with pytest.raises(TransactionManagementError):
            execute(connection, "SELECT 1", [], fetch=True)
        transaction.set_rollback(True)
    assert execute(connection, "SELECT 1", [], fetch=True) == [(1,)]


def test_execute_wrappers_see_every_statement(rows: AcmeOrder) -> None:
    seen: list[str] = []

    def wrapper(run: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return run(sql, params, many, context)

    connection = connections["default"]
    with connection.execute_wrapper(wrapper):
        assert lookups.order_by_slug.one(rows.slug) is not None
    assert len(seen) == 1 and "slug" in seen[0]

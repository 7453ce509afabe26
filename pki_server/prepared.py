"""SELECTs compiled once, run many times: the hot lookups of ACME requests without the ORM's compiler.

Turning a QuerySet into SQL costs Django several hundred microseconds — for a one-row lookup by
a unique key, about ten times what SQLite then spends answering it (docs/performance.md has the
profile). An ACME request makes a handful of such lookups, each the same SQL with other values.
:class:`Prepared` builds its QuerySet once per database connection, keeps the compiled SQL, the
column converters and the model-building plan, and afterwards only executes the SQL with the new
parameters and builds the rows into model instances exactly as Django's ``ModelIterable`` does
(``Model.from_db``, ``select_related`` populators; :func:`_converter` and :func:`_build` take two
shortcuts to the same values and instances). Statements run inside the caller's transaction,
on the connection's driver cursor (:func:`execute`), and are counted by ``assertNumQueries``.

Only lookups whose parameters are exactly the builder's arguments, in order, are cached: the
first call checks it, and a builder whose compiled parameters differ (a Q that reorders them,
a value that Django adapts) simply runs as a QuerySet every time.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
from django.db.models import Model, QuerySet
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query import get_related_populators
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, post_save, pre_init, pre_save
from django.db.models.sql.compiler import SQLCompiler
from django.utils.dateparse import parse_datetime

M = TypeVar("M", bound=Model)
# Django 5.2's signature (klass_info, select, db); the installed stubs may describe a later one.
_related_populators: Any = get_related_populators


@dataclass(frozen=True)
class _Plan:
    sql: str
    converters: list[tuple[int, Callable[[Any], Any]]]  # (column, what turns its database value into Python's)
    model: type[Model]
    init_list: list[str]
    start: int
    end: int
    populators: list[Any]
    plain_init: bool  # the model's own fields, in order, Model.__init__ and plain descriptors: see _build


def _converter(compiler: SQLCompiler, functions: list[Any], expression: Any) -> Callable[[Any], Any]:
    """One column's converters (``SQLCompiler.apply_converters`` calls them the same way), as one function.

    SQLite's datetime converter is replaced by the same steps without its per-call indirections: a
    row of ACME's tables has up to six datetimes, and Django's converter loop was a third of a
    one-row lookup.
    """
    connection = compiler.connection
    if connection.vendor == "sqlite" and functions == [getattr(connection.ops, "convert_datetimefield_value", None)]:
        def convert_datetime(value: Any) -> Any:
            # django.db.backends.sqlite3.operations.DatabaseOperations.convert_datetimefield_value
            if value is not None:
                if not isinstance(value, datetime):
                    value = parse_datetime(value)
                if settings.USE_TZ and value.utcoffset() is None:
                    value = value.replace(tzinfo=connection.timezone)  # timezone.make_aware
            return value

        return convert_datetime

    def convert(value: Any) -> Any:
        for function in functions:
            value = function(value, expression, connection)
        return value

    return convert


# What a field's class attribute is when setting it on a new instance only stores the value.
_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def _build(plan: _Plan, values: Sequence[Any]) -> Model:
    """``plan.model.from_db("default", plan.init_list, values)``, and the instance it gives.

    With every concrete field selected, in order, ``from_db`` calls ``Model.__init__``, which sets
    each field's attribute in turn (through descriptors that, on a new instance, only store the
    value) and sends pre_init and post_init. Where the model keeps Django's ``__init__`` and
    those descriptors, and nobody listens to the signals, the attributes are stored at once.
    """
    if not plan.plain_init or pre_init.receivers or post_init.receivers:
        return plan.model.from_db("default", plan.init_list, values)
    obj = plan.model.__new__(plan.model)
    state = obj._state = ModelState()
    state.adding, state.db = False, "default"
    obj.__dict__.update(zip(plan.init_list, values, strict=True))
    return obj


class Prepared(Generic[M]):
    """``Prepared(lambda slug: Model.objects.filter(slug=slug)[:1])`` then ``.one(slug)``."""

    def __init__(self, build: Callable[..., QuerySet[M]]) -> None:
        self.build = build
        self._plans: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Plan | None] = weakref.WeakKeyDictionary()

    def all(self, *params: Any) -> list[M]:
        connection = connections["default"]
        try:
            plan = self._plans[connection]
        except KeyError:
            queryset = self.build(*params)
            plan = self._compile(queryset, params)
            self._plans[connection] = plan
            if plan is None:
                return list(queryset)
        if plan is None:
            return list(self.build(*params))
        rows: Any = execute(connection, plan.sql, params, fetch=True)
        if plan.converters:
            rows = [_convert(row, plan.converters) for row in rows]
        objects: list[M] = []
        for row in rows:
            obj = _build(plan, row[plan.start:plan.end])
            for populator in plan.populators:
                populator.populate(row, obj)
            objects.append(obj)  # type: ignore[arg-type]
        return objects

    def one(self, *params: Any) -> M | None:
        rows = self.all(*params)
        return rows[0] if rows else None

    @staticmethod
    def _compile(queryset: QuerySet[M], params: tuple[Any, ...]) -> _Plan | None:
        if queryset.db != "default" or queryset._iterable_class.__name__ != "ModelIterable" \
                or getattr(queryset, "_known_related_objects", None) \
                or getattr(queryset, "_prefetch_related_lookups", None) \
                or queryset.query.annotation_select:
            return None
        compiler = queryset.query.get_compiler(using="default")
        sql, sql_params = compiler.as_sql()
        # Cache only if the SQL's parameters are the arguments, in order, and cannot be confused.
        if tuple(sql_params) != params or len({repr(p) for p in params}) != len(params):
            return None
        select, klass_info = compiler.select, compiler.klass_info
        if klass_info is None:
            return None
        fields = [column[0] for column in select[:compiler.col_count]]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        model = klass_info["model"]
        init_list = [column[0].target.attname for column in select[start:end]]
        return _Plan(
            sql=sql,
            converters=[(position, _converter(compiler, functions, expression))
                        for position, (functions, expression) in compiler.get_converters(fields).items()],
            model=model,
            init_list=init_list,
            start=start,
            end=end,
            populators=_related_populators(klass_info, select, "default"),
            plain_init=model.__init__ is Model.__init__
            and init_list == [field.attname for field in model._meta.concrete_fields]
            and all(type(inspect.getattr_static(model, attname, None)) in _PLAIN_DESCRIPTORS for attname in init_list),
        )


def _convert(row: Sequence[Any], converters: list[tuple[int, Callable[[Any], Any]]]) -> list[Any]:
    values = list(row)
    for position, convert in converters:
        values[position] = convert(values[position])
    return values


def conditional_update(model: type[Model], pk: Any, values: dict[str, Any], *, status: str | None = None,
                       condition: str = "", condition_params: tuple[Any, ...] = ()) -> int:
    """``UPDATE <model> SET <values> WHERE pk = %s [AND status = %s] [AND (<condition>)]``; the row count.

    The state machine's writes (a row moves on only from the state it was read in), without
    ``QuerySet.update``'s query building, which costs several times the statement. Values are
    adapted by their fields, exactly as ``update()`` does (``get_db_prep_save``); ``condition`` is
    SQL over the model's own columns, its datetime parameters adapted for the database.
    """
    connection = connections["default"]
    quote = connection.ops.quote_name
    meta = model._meta
    fields: list[Any] = [meta.get_field(name) for name in values]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    params: list[Any] = [field.get_db_prep_save(value, connection)
                         for field, value in zip(fields, values.values(), strict=True)]
    pk_field: Any = meta.pk
    where = [f"{quote(pk_field.column)} = %s"]
    params.append(pk)
    if status is not None:
        status_field: Any = meta.get_field("status")
        where.append(f"{quote(status_field.column)} = %s")
        params.append(status)
    if condition:
        where.append(f"({condition})")
        params.extend(connection.ops.adapt_datetimefield_value(p) if isinstance(p, datetime) else p
                      for p in condition_params)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {' AND '.join(where)}"  # noqa: S608 - model names
    return int(execute(connection, sql, params, fetch=False))


_insert_sql: dict[tuple[type[Model], int], tuple[str, list[Any]]] = {}


def insert(objects: Sequence[Model], *, send_signals: bool = False) -> None:
    """INSERT new instances of one model in one statement and give them their primary keys.

    What ``Model.save()`` / ``bulk_create()`` write (each field's ``pre_save`` and
    ``get_db_prep_save``: defaults, adapted values), with the statement built once per model and
    row count. ``pre_save``/``post_save`` (``created=True``) are sent for each object only with
    ``send_signals``, as ``save()`` sends them (ACME's rows go without: nothing listens). Falls back
    to ``bulk_create`` where the database cannot return the keys of inserted rows (SQLite older
    than 3.35).
    """
    if not objects:
        return
    model = type(objects[0])
    connection = connections["default"]
    if send_signals:
        for obj in objects:
            pre_save.send(sender=model, instance=obj, raw=False, using="default", update_fields=None)
    if not connection.features.can_return_rows_from_bulk_insert:
        model._default_manager.bulk_create(objects)
    else:
        _insert(model, objects, connection)
    if send_signals:
        for obj in objects:
            post_save.send(sender=model, instance=obj, created=True, update_fields=None, raw=False, using="default")


def _insert(model: type[Model], objects: Sequence[Model], connection: BaseDatabaseWrapper) -> None:
    key = (model, len(objects))
    if key not in _insert_sql:
        meta = model._meta
        pk_field: Any = meta.pk
        fields: list[Any] = [f for f in meta.concrete_fields if f is not pk_field or not pk_field.db_returning]
        quote = connection.ops.quote_name
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        _insert_sql[key] = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES {', '.join([row] * len(objects))} RETURNING {quote(pk_field.column)}", fields)
    sql, fields = _insert_sql[key]
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objects for field in fields]
    keys = [row[0] for row in execute(connection, sql, params, fetch=True)]
    for obj, pk in zip(objects, keys, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, "default"


_native_sql: dict[str, str] = {}


def execute(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], *, fetch: bool) -> Any:
    """Run one statement: its rows (``fetch``) or its row count.

    What ``connection.cursor().execute()`` does, minus the layers that cost more than SQLite's
    answer to a one-row lookup: the health check, the connection, a broken transaction refused,
    driver errors raised as ``django.db``'s. SQLite's ``%s`` placeholders are rewritten once per
    statement rather than on every call. While queries are logged (``DEBUG``,
    ``assertNumQueries``) or an ``execute_wrapper`` is installed, it takes Django's cursor, so
    those see every statement.
    """
    if connection.queries_logged or connection.execute_wrappers:
        with connection.cursor() as wrapped:
            wrapped.execute(sql, params)
            return wrapped.fetchall() if fetch else wrapped.rowcount
    connection.close_if_health_check_failed()
    if connection.connection is None:
        connection.ensure_connection()
    connection.validate_no_broken_transaction()
    if connection.vendor == "sqlite":
        try:
            native = _native_sql[sql]
        except KeyError:
            if len(_native_sql) > 1000:  # statements come from code, so this is only a guard
                _native_sql.clear()
            native = _native_sql.setdefault(sql, FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%"))
        cursor: Any = connection.connection.cursor()
    else:
        native, cursor = sql, connection.create_cursor()
    try:
        cursor.execute(native, params)
        return cursor.fetchall() if fetch else cursor.rowcount
    except connection.Database.Error:  # type: ignore[attr-defined]  # each backend sets it
        with connection.wrap_database_errors:
            raise
        raise  # not reached: the wrapper re-raises as django.db's error
    finally:
        cursor.close()

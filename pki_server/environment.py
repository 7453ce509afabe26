"""Reading PKI_* environment variables into typed values.

Every parser raises :class:`ConfigurationError` with a message that names the variable and says
what was wrong, so that start-up can print one clear line instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


class ConfigurationError(ImproperlyConfigured):
    """A PKI_* variable is missing or has a value that cannot be used."""


def get_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def get_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ConfigurationError(f"{name}={env[name]!r} is not a boolean (use 1/0, true/false, yes/no, on/off).")


_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def get_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _INTEGER.fullmatch(raw):  # int() would also take "1_000" and non-ASCII digits
        raise ConfigurationError(f"{name}={raw!r} is not a whole number.")
    value = int(raw)
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name}={value} is too small (the minimum is {minimum}).")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name}={value} is too large (the maximum is {maximum}).")
    return value


def get_choice(env: Mapping[str, str], name: str, default: str, choices: Iterable[str]) -> str:
    """One of ``choices``, matched case-insensitively and returned as spelled in ``choices``."""
    allowed = list(choices)
    raw = env.get(name, "").strip()
    if not raw:
        return default
    for choice in allowed:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigurationError(f"{name}={raw!r} is not one of {', '.join(allowed)}.")


def get_list(env: Mapping[str, str], name: str, default: list[str], *, allow_empty: bool = True) -> list[str]:
    raw = env.get(name, "").strip()
    if not raw:
        return list(default)
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items and not allow_empty:
        raise ConfigurationError(f"{name}={raw!r} lists nothing; give comma-separated values or unset it.")
    return items


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?", re.ASCII)


def get_host(env: Mapping[str, str], name: str, default: str) -> str:
    """A host name or an IP address (no port, no brackets)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if len(raw) > 253 or not _HOST_NAME.fullmatch(raw):
        raise ConfigurationError(f"{name}={raw!r} is not a host name or an IP address.")
    return raw


def get_networks(
    env: Mapping[str, str], name: str, default: list[str]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in get_list(env, name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigurationError(f"{name}: {item!r} is not an IP network in CIDR notation.") from None
    return networks


def _split_url(name: str, raw: str, shown: str) -> SplitResult:
    """``urlsplit`` that reports a malformed URL (such as an unclosed ``[``) as a ConfigurationError."""
    try:
        return urlsplit(raw)
    except ValueError as ex:
        raise ConfigurationError(f"{name}={shown!r} is not a valid URL ({ex}).") from None


def get_base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An absolute http(s) URL without query or fragment, returned without a trailing slash."""
    raw = env.get(name, "").strip() or default
    parts = _split_url(name, raw, raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"{name}={raw!r} must be an absolute http:// or https:// URL.")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name}={raw!r} must not have a query string or fragment.")
    if "@" in parts.netloc:
        raise ConfigurationError(f"{name}={_redact(raw)!r} must not contain a user name or password.")
    if any(char.isspace() for char in raw):
        raise ConfigurationError(f"{name}={raw!r} must not contain spaces.")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} has an invalid port.") from None
    return raw.rstrip("/")


def data_directory(env: Mapping[str, str], name: str = "PKI_DATA_DIR", *, create: bool = True) -> Path:
    """The data directory (default ``var`` in the working directory), created unless ``create=False``."""
    path = Path(env.get(name, "").strip() or "var").expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{name}={str(path)!r} is not a directory.")
    if create:
        create_directory(path, name)
    return path


def create_directory(path: Path, name: str = "PKI_DATA_DIR") -> None:
    """Create the data directory (mode 0700) if needed, and check that it is writable."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigurationError(f"{name}={str(path)!r} cannot be created: {ex.strerror}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{name}={str(path)!r} is not writable.")


def secret_key(
    env: Mapping[str, str], data_dir: Path, name: str = "PKI_SECRET_KEY", *, wait: float = 5.0
) -> str:
    """The configured secret key, or one generated once and kept (mode 0600) in the data directory.

    Processes that start together on a fresh data directory agree on one key: the first creates
    the file (O_EXCL), the others wait up to ``wait`` seconds for it to be written.
    """
    value = env.get(name, "").strip()
    if value:
        if len(value) < 32:
            raise ConfigurationError(f"{name} is too short: use at least 32 random characters.")
        return value
    create_directory(data_dir)
    path = data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # generated before, maybe by a concurrent process: read it below
    except OSError as ex:
        raise ConfigurationError(f"{name} is unset and {path} cannot be created: {ex.strerror}.") from None
    else:
        with os.fdopen(fd, "w") as stream:
            stream.write(secrets.token_urlsafe(48))
    deadline = time.monotonic() + wait
    while True:
        try:
            value = path.read_text().strip()
        except OSError as ex:
            raise ConfigurationError(
                f"{name} is unset and the generated secret key {path} cannot be read: {ex.strerror}."
            ) from None
        if value:
            return value
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{name} is unset and the secret key file {path} is empty: delete it to have a new one made."
            )
        time.sleep(0.05)  # a concurrent process created it and is writing it


def database(env: Mapping[str, str], data_dir: Path, name: str = "PKI_DATABASE_URL") -> dict[str, Any]:
    """Django's DATABASES["default"] from a URL; SQLite in the data directory when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return sqlite_database(data_dir / "pki.sqlite3")
    shown = _redact(raw)
    parts = _split_url(name, raw, shown)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        database_name = unquote(parts.path.lstrip("/"))
        if not database_name:
            raise ConfigurationError(f"{name} must name the database, as in postgres://user@host:5432/pki.")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"{name} has an invalid port.") from None
        options = _postgres_options(name, dict(parse_qsl(parts.query)), shown)
        return {
            "ENGINE": "pki_server.postgresql",
            "NAME": database_name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 300,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        # As dj-database-url: sqlite:////absolute/path.sqlite3, or sqlite:///relative/path.sqlite3.
        path = unquote(parts.path)[1:]
        if parts.netloc or parts.query or not path.strip("/"):
            raise ConfigurationError(f"{name}: use sqlite:////absolute/path.sqlite3 for an SQLite file.")
        file = Path(path).absolute()
        if not file.parent.is_dir():
            raise ConfigurationError(f"{name}: the SQLite file's folder {str(file.parent)!r} is missing.")
        return sqlite_database(file)
    raise ConfigurationError(
        f"{name}={shown!r}: unsupported database; use postgres://… or sqlite:////path."
    )


#: How often psycopg runs a statement on one connection before it prepares it on the server. A
#: prepared statement is parsed and planned once per connection: PostgreSQL spent about 200 µs of CPU
#: on each of an ACME order's joined lookups without, 50 µs with (docs/performance.md).
PREPARE_THRESHOLD = 5


def _postgres_options(name: str, options: dict[str, Any], shown: str) -> dict[str, Any]:
    """libpq options from the URL's query, plus statements bound and prepared on the server.

    ``server_side_binding`` (Django) and ``prepare_threshold`` (psycopg) may be given in the URL:
    ``prepare_threshold=none`` turns preparing off, for a pooler that cannot keep prepared statements
    (PgBouncer in transaction mode before 1.21).
    """
    binding = str(options.get("server_side_binding", "true")).strip().lower()
    if binding not in _TRUE | _FALSE:
        raise ConfigurationError(f"{name}={shown!r}: server_side_binding must be true or false.")
    options["server_side_binding"] = binding in _TRUE
    threshold = str(options.get("prepare_threshold", PREPARE_THRESHOLD)).strip().lower()
    if threshold in {"none", ""}:
        options["prepare_threshold"] = None
    elif _INTEGER.fullmatch(threshold) and int(threshold) >= 0:
        options["prepare_threshold"] = int(threshold)
    else:
        raise ConfigurationError(f"{name}={shown!r}: prepare_threshold must be a number of runs (0 or more) or none.")
    return options


def sqlite_database(path: Path) -> dict[str, Any]:
    """SQLite tuned for a concurrent server.

    WAL lets readers proceed while one writer writes; IMMEDIATE transactions take the write lock
    at BEGIN, so two writers queue on the busy timeout instead of one failing with "database is
    locked" when it upgrades a read lock.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        },
        # Keep the connection: opening SQLite and running the PRAGMAs costs about a millisecond,
        # which every ACME request would otherwise pay.
        "CONN_MAX_AGE": None,
    }


def redis_url(env: Mapping[str, str], name: str = "PKI_REDIS_URL") -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = _split_url(name, raw, _redact(raw))
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigurationError(f"{name}={_redact(raw)!r} must be a redis://, rediss:// or unix:// URL.")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{name}={_redact(raw)!r} must name the socket, as in unix:///run/redis.sock.")
        return raw
    if not parts.hostname:
        raise ConfigurationError(f"{name}={_redact(raw)!r} must name the host, as in redis://127.0.0.1:6379/0.")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(f"{name}={_redact(raw)!r} has an invalid port.") from None
    database_number = parts.path.strip("/")
    if database_number and not database_number.isdigit():
        raise ConfigurationError(f"{name}={_redact(raw)!r}: the path must be a database number, as in /0.")
    return raw


def _redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, safe to print."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}{slash}{path}"

"""Reading PKI_* environment variables into typed values.

Every parser raises :class:`ConfigurationError` with a message that names the variable and says
what was wrong, so that start-up can print one clear line instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


class ConfigurationError(ImproperlyConfigured):
    """A PKI_* variable is missing or has a value that cannot be used."""


def get_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def get_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={env[name]!r} is not a boolean (use 1/0, true/false, yes/no, on/off).")


def get_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name}={value} is too small (the minimum is {minimum}).")
    return value


def get_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name, "").strip()
    if not raw:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


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


def get_base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An absolute http(s) URL without query or fragment, returned without a trailing slash."""
    raw = env.get(name, "").strip() or default
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"{name}={raw!r} must be an absolute http:// or https:// URL.")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name}={raw!r} must not have a query string or fragment.")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} has an invalid port.") from None
    return raw.rstrip("/")


def data_directory(env: Mapping[str, str], name: str = "PKI_DATA_DIR") -> Path:
    path = Path(env.get(name, "").strip() or "var").expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigurationError(f"{name}={str(path)!r} cannot be created: {ex.strerror}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{name}={str(path)!r} is not writable.")
    return path


def secret_key(env: Mapping[str, str], data_dir: Path, name: str = "PKI_SECRET_KEY") -> str:
    """The configured secret key, or one generated once and kept (mode 0600) in the data directory."""
    value = env.get(name, "").strip()
    if value:
        if len(value) < 32:
            raise ConfigurationError(f"{name} is too short: use at least 32 random characters.")
        return value
    path = data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # generated before, maybe by a concurrent process: read it below
    else:
        with os.fdopen(fd, "w") as stream:
            stream.write(secrets.token_urlsafe(48))
    try:
        value = path.read_text().strip()
    except OSError as ex:
        raise ConfigurationError(f"Cannot read the generated secret key {path}: {ex.strerror}.") from None
    if not value:  # a concurrent process created but has not yet written it
        raise ConfigurationError(f"The secret key file {path} is empty: delete it to have a new one made.")
    return value


def database(env: Mapping[str, str], data_dir: Path, name: str = "PKI_DATABASE_URL") -> dict[str, Any]:
    """Django's DATABASES["default"] from a URL; SQLite in the data directory when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return sqlite_database(data_dir / "pki.sqlite3")
    parts = urlsplit(raw)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        database_name = unquote(parts.path.lstrip("/"))
        if not database_name:
            raise ConfigurationError(f"{name} must name the database, as in postgres://user@host:5432/pki.")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"{name} has an invalid port.") from None
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database_name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise ConfigurationError(f"{name}: use sqlite:////absolute/path.sqlite3 for an SQLite file.")
        return sqlite_database(Path(path))
    raise ConfigurationError(
        f"{name}={_redact(raw)!r}: unsupported database; use postgres://… or sqlite:////path."
    )


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
    }


def redis_url(env: Mapping[str, str], name: str = "PKI_REDIS_URL") -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigurationError(f"{name}={_redact(raw)!r} must be a redis://, rediss:// or unix:// URL.")
    return raw


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url

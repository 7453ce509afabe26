"""Django settings for pki-server.

Every value comes from a PKI_* environment variable, with defaults that run the embedded instance
(SQLite and key files in ``PKI_DATA_DIR``, an in-memory channel layer). docs/settings.md lists them.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from urllib.parse import urlsplit

from pki_server import environment as env
from pki_server.acme.validation import base as validation_base

# profiles.py is import-light (cryptography and the lazy django.conf.settings, no models), so the
# profile names can be checked here, at start-up, like every other value.
from pki_server.core.profiles import PROFILES

_ENV = os.environ

# Created at the end of this module, once every value is known to be good (see SECRET_KEY).
DATA_DIR = env.data_directory(_ENV, create=False)
DEBUG = env.get_bool(_ENV, "PKI_DEBUG", False)

# Where `pki-server serve` listens by default, and what the base URL defaults to.
PKI_HOST = env.get_host(_ENV, "PKI_HOST", "127.0.0.1")
PKI_PORT = env.get_int(_ENV, "PKI_PORT", 8000, minimum=1, maximum=65535)


def _default_base_url() -> str:
    host = PKI_HOST
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - naming the wildcard address, not binding it
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{PKI_PORT}"


# Public URL of this server: certificates carry it in their AIA and CRL distribution points, and
# ACME links are built from it. Changing it later does not change certificates already issued.
PKI_BASE_URL = env.get_base_url(_ENV, "PKI_BASE_URL", _default_base_url())

_base_host = urlsplit(PKI_BASE_URL).hostname or ""
if ":" in _base_host:  # Django matches IPv6 hosts in their bracketed form
    _base_host = f"[{_base_host}]"
ALLOWED_HOSTS = env.get_list(
    _ENV, "PKI_ALLOWED_HOSTS", list(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", _base_host])),
    allow_empty=False,
)

DATABASES = {"default": env.database(_ENV, DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PKI_REDIS_URL = env.redis_url(_ENV)
if PKI_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 defaults socket_timeout to 5 s, the very time channels_redis's BZPOPMIN waits: the
            # reply and the timeout race, and a lost race kills `layer.receive()`. Reads wait longer here.
            "CONFIG": {"hosts": [{"address": PKI_REDIS_URL, "socket_timeout": 30}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pki_server.core",
    "pki_server.acme",
    "pki_server.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # CSP and the other secure headers on the dashboard's and the admin's pages (docs/dashboard.md).
    "pki_server.dashboard.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pki_server.urls"
ASGI_APPLICATION = "pki_server.asgi.application"

# The operator dashboard (docs/dashboard.md): staff sign in at /dashboard/login/. Session cookies are
# HttpOnly and SameSite=Lax whatever PKI_DEBUG says (Django's defaults, pinned here on purpose).
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Key storage of the "default" key backend: files under the data directory, readable by the
# server's user only.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "pki_keys": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(DATA_DIR / "keys"),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
}

# Key backends, a registry like STORAGES: an HSM backend is one module and one entry here.
PKI_KEY_BACKENDS = {
    "default": {
        "BACKEND": "pki_server.core.key_backends.storages.StoragesBackend",
        "OPTIONS": {"storage_alias": "pki_keys"},
    },
    "db": {"BACKEND": "pki_server.core.key_backends.db.DBBackend"},
}

# Certificate policy.
PKI_MIN_KEY_SIZE = env.get_int(_ENV, "PKI_MIN_KEY_SIZE", 2048, minimum=512)
PKI_DEFAULT_KEY_SIZE = env.get_int(_ENV, "PKI_DEFAULT_KEY_SIZE", 4096, minimum=PKI_MIN_KEY_SIZE)
if PKI_DEFAULT_KEY_SIZE & (PKI_DEFAULT_KEY_SIZE - 1):
    raise env.ConfigurationError(
        f"PKI_DEFAULT_KEY_SIZE={PKI_DEFAULT_KEY_SIZE} is not a power of two (use 2048, 4096 ...)."
    )
PKI_CA_DEFAULT_EXPIRES = timedelta(days=env.get_int(_ENV, "PKI_CA_DEFAULT_EXPIRES", 3650, minimum=1))
PKI_DEFAULT_EXPIRES = timedelta(days=env.get_int(_ENV, "PKI_DEFAULT_EXPIRES", 365, minimum=1))
PKI_DEFAULT_PROFILE = env.get_choice(_ENV, "PKI_DEFAULT_PROFILE", "webserver", PROFILES)
# How long a CRL is valid (its nextUpdate), in hours; it is re-signed when a third of that remains.
PKI_CRL_LIFETIME = timedelta(hours=env.get_int(_ENV, "PKI_CRL_LIFETIME", 24, minimum=1, maximum=24 * 366))
# OCSP (docs/settings.md, "OCSP"): days a delegated responder certificate is valid (renewed when a
# third is left), and hours an OCSP response is valid (its nextUpdate).
PKI_OCSP_RESPONDER_LIFETIME = env.get_int(_ENV, "PKI_OCSP_RESPONDER_LIFETIME", 3, minimum=1, maximum=365)
PKI_OCSP_RESPONSE_LIFETIME = env.get_int(_ENV, "PKI_OCSP_RESPONSE_LIFETIME", 1, minimum=1, maximum=168)

# ACME (docs/settings.md, "ACME"). Validation reaches servers of internal networks, so the
# address policy is the operator's: by default only the validating host itself, link-local and
# cloud-metadata addresses are denied.
PKI_ACME_DEFAULT_CA = env.get_str(_ENV, "PKI_ACME_DEFAULT_CA", "")
PKI_ACME_HTTP01_PORT = env.get_int(_ENV, "PKI_ACME_HTTP01_PORT", 80, minimum=1, maximum=65535)
PKI_ACME_TLSALPN01_PORT = env.get_int(_ENV, "PKI_ACME_TLSALPN01_PORT", 443, minimum=1, maximum=65535)
# Seconds one validation may take in all (lookups, connections, redirects); a worker that dies
# mid-validation has its work handed on after about twice this.
PKI_ACME_VALIDATION_TIMEOUT = env.get_int(_ENV, "PKI_ACME_VALIDATION_TIMEOUT", 10, minimum=1, maximum=300)
PKI_ACME_CA_CACHE_SECONDS = env.get_int(_ENV, "PKI_ACME_CA_CACHE_SECONDS", 5, minimum=0, maximum=300)
PKI_ACME_NONCE_STORE = env.get_choice(_ENV, "PKI_ACME_NONCE_STORE", "auto", ["auto", "memory", "database", "redis"])
if PKI_ACME_NONCE_STORE == "redis" and not PKI_REDIS_URL:
    raise env.ConfigurationError("PKI_ACME_NONCE_STORE=redis needs PKI_REDIS_URL.")
try:
    PKI_ACME_DNS_RESOLVERS = validation_base.parse_resolvers(_ENV.get("PKI_ACME_DNS_RESOLVERS", ""))
except ValueError as _ex:
    raise env.ConfigurationError(f"PKI_ACME_DNS_RESOLVERS: {_ex}.") from None
for _name in ("PKI_ACME_VALIDATION_DENY_NETWORKS", "PKI_ACME_VALIDATION_ALLOW_NETWORKS"):
    _raw = _ENV.get(_name, "").strip()
    try:
        if _name.endswith("DENY_NETWORKS") and not _raw:
            _networks = validation_base.DEFAULT_DENY_NETWORKS
        else:
            _networks = () if _raw.lower() == "none" else validation_base.parse_networks(_raw)
    except ValueError as _ex:
        raise env.ConfigurationError(f"{_name}: {_ex}.") from None
    globals()[_name] = _networks
PKI_ACME_VALIDATION_DENY_NETWORKS: tuple[validation_base.Network, ...]
PKI_ACME_VALIDATION_ALLOW_NETWORKS: tuple[validation_base.Network, ...]

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

PKI_LOG_LEVEL = env.get_choice(
    _ENV, "PKI_LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "pki_server": {"handlers": ["console"], "level": PKI_LOG_LEVEL},
    },
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    if PKI_BASE_URL.startswith("https://"):
        SESSION_COOKIE_SECURE = True
        CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = [PKI_BASE_URL.split("/", 3)[0] + "//" + PKI_BASE_URL.split("/", 3)[2]]

# Every other value is valid: only now write to the data directory, so that a bad value writes
# nothing. An unset PKI_SECRET_KEY is generated once into DATA_DIR/secret_key (mode 0600).
SECRET_KEY = env.secret_key(_ENV, DATA_DIR)
env.create_directory(DATA_DIR)

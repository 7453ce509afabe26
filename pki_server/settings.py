"""Django settings for pki-server.

Every value comes from a PKI_* environment variable, with defaults that run the embedded instance
(SQLite and key files in ``PKI_DATA_DIR``, an in-memory channel layer). docs/settings.md lists them.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from pki_server import environment as env

_ENV = os.environ

DATA_DIR = env.data_directory(_ENV)
DEBUG = env.get_bool(_ENV, "PKI_DEBUG", False)
SECRET_KEY = env.secret_key(_ENV, DATA_DIR)

# Where `pki-server serve` listens by default, and what the base URL defaults to.
PKI_HOST = env.get_str(_ENV, "PKI_HOST", "127.0.0.1")
PKI_PORT = env.get_int(_ENV, "PKI_PORT", 8000, minimum=1)
if PKI_PORT > 65535:
    raise env.ConfigurationError(f"PKI_PORT={PKI_PORT} is not a TCP port (1-65535).")


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

_base_host = PKI_BASE_URL.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
ALLOWED_HOSTS = env.get_list(_ENV, "PKI_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", _base_host])

DATABASES = {"default": env.database(_ENV, DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PKI_REDIS_URL = env.redis_url(_ENV)
if PKI_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [PKI_REDIS_URL]},
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pki_server.urls"
ASGI_APPLICATION = "pki_server.asgi.application"

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
PKI_CA_DEFAULT_EXPIRES = timedelta(days=env.get_int(_ENV, "PKI_CA_DEFAULT_EXPIRES", 3650, minimum=1))
PKI_DEFAULT_EXPIRES = timedelta(days=env.get_int(_ENV, "PKI_DEFAULT_EXPIRES", 365, minimum=1))
PKI_DEFAULT_PROFILE = env.get_str(_ENV, "PKI_DEFAULT_PROFILE", "webserver")

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "pki_server": {"handlers": ["console"], "level": env.get_str(_ENV, "PKI_LOG_LEVEL", "INFO").upper()},
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

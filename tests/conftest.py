"""Test set-up: every run gets its own data directory, so tests never touch ./var."""

from __future__ import annotations

import os
import shutil
import tempfile

_DATA_DIR = tempfile.mkdtemp(prefix="pki-server-tests-")
os.environ["PKI_DATA_DIR"] = _DATA_DIR
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pki_server.settings")
os.environ.setdefault("PKI_LOG_LEVEL", "WARNING")
for _name in ("PKI_DATABASE_URL", "PKI_REDIS_URL", "PKI_BASE_URL", "PKI_SECRET_KEY"):
    os.environ.pop(_name, None)

import django  # noqa: E402

django.setup()

pytest_plugins = ["tests.fixtures"]


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_DATA_DIR, ignore_errors=True)

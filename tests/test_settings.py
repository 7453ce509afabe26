"""Settings from PKI_* variables: the parsers one by one, then real start-ups in subprocesses.

A bad value must stop ``pki-server`` with exit code 2 and exactly one line on stderr that names
the variable, and must write nothing (not even the data directory).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pki_server import environment as env
from pki_server.environment import ConfigurationError

# --- Running pki-server in a subprocess -----------------------------------------------------------

TIMEOUT = 120
PREFIX = "pki-server: configuration error:"


def pki_env(data_dir: Path | None, **variables: str) -> dict[str, str]:
    """The test process's environment without any PKI_* variable, plus ``variables``."""
    result = {
        key: value for key, value in os.environ.items()
        if not key.startswith("PKI_") and key != "DJANGO_SETTINGS_MODULE"
    }
    if data_dir is not None:
        result["PKI_DATA_DIR"] = str(data_dir)
    result["PKI_LOG_LEVEL"] = "WARNING"
    result.update(variables)
    return result


def run_pki(args: list[str], environ: dict[str, str], cwd: Path, timeout: float = TIMEOUT,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pki_server", *args], env=environ, cwd=cwd,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


# Prints the settings a start-up with the given environment arrives at, as JSON.
SHOW_SETTINGS = """
import json
from django.conf import settings as s
print(json.dumps({
    "DATA_DIR": str(s.DATA_DIR),
    "SECRET_KEY": s.SECRET_KEY,
    "DEBUG": s.DEBUG,
    "PKI_HOST": s.PKI_HOST,
    "PKI_PORT": s.PKI_PORT,
    "PKI_BASE_URL": s.PKI_BASE_URL,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "CSRF_TRUSTED_ORIGINS": getattr(s, "CSRF_TRUSTED_ORIGINS", []),
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "DATABASE": s.DATABASES["default"],
    "PKI_REDIS_URL": s.PKI_REDIS_URL,
    "CHANNEL_LAYER": s.CHANNEL_LAYERS["default"],
    "KEY_LOCATION": s.STORAGES["pki_keys"]["OPTIONS"]["location"],
    "LOG_LEVEL": s.LOGGING["loggers"]["pki_server"]["level"],
    "PKI_MIN_KEY_SIZE": s.PKI_MIN_KEY_SIZE,
    "PKI_DEFAULT_KEY_SIZE": s.PKI_DEFAULT_KEY_SIZE,
    "PKI_CA_DEFAULT_EXPIRES": s.PKI_CA_DEFAULT_EXPIRES.days,
    "PKI_DEFAULT_EXPIRES": s.PKI_DEFAULT_EXPIRES.days,
    "PKI_DEFAULT_PROFILE": s.PKI_DEFAULT_PROFILE,
}))
"""


def show_settings(environ: dict[str, str], cwd: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS], env={**environ, "DJANGO_SETTINGS_MODULE": "pki_server.settings"},
        cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- The parsers ----------------------------------------------------------------------------------

def raises_naming(name: str, call: Callable[[], object]) -> str:
    """Run ``call``; it must raise ConfigurationError with a one-line message naming ``name``."""
    with pytest.raises(ConfigurationError) as info:
        call()
    message = str(info.value)
    assert name in message, message
    assert "\n" not in message
    return message


class TestGetStr:
    def test_value_default_and_blank(self) -> None:
        assert env.get_str({"PKI_X": "  value "}, "PKI_X", "d") == "value"
        assert env.get_str({}, "PKI_X", "d") == "d"
        assert env.get_str({"PKI_X": "   "}, "PKI_X", "d") == "d"


class TestGetBool:
    @pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
    def test_true(self, raw: str) -> None:
        assert env.get_bool({"PKI_DEBUG": raw}, "PKI_DEBUG", False) is True

    @pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
    def test_false(self, raw: str) -> None:
        assert env.get_bool({"PKI_DEBUG": raw}, "PKI_DEBUG", True) is False

    def test_default(self) -> None:
        assert env.get_bool({}, "PKI_DEBUG", True) is True
        assert env.get_bool({"PKI_DEBUG": ""}, "PKI_DEBUG", False) is False

    @pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
    def test_bad(self, raw: str) -> None:
        message = raises_naming("PKI_DEBUG", lambda: env.get_bool({"PKI_DEBUG": raw}, "PKI_DEBUG", False))
        assert repr(raw) in message


class TestGetInt:
    @pytest.mark.parametrize(("raw", "value"), [("8000", 8000), (" 42 ", 42), ("+7", 7), ("-3", -3)])
    def test_good(self, raw: str, value: int) -> None:
        assert env.get_int({"PKI_PORT": raw}, "PKI_PORT", 1) == value

    def test_default(self) -> None:
        assert env.get_int({}, "PKI_PORT", 8000) == 8000

    @pytest.mark.parametrize("raw", ["abc", "1.5", "1_000", "0x10", "١٢", "8000 8001"])
    def test_not_a_number(self, raw: str) -> None:
        message = raises_naming("PKI_PORT", lambda: env.get_int({"PKI_PORT": raw}, "PKI_PORT", 1))
        assert "not a whole number" in message

    def test_limits(self) -> None:
        assert env.get_int({"PKI_PORT": "1"}, "PKI_PORT", 8000, minimum=1, maximum=65535) == 1
        assert env.get_int({"PKI_PORT": "65535"}, "PKI_PORT", 8000, minimum=1, maximum=65535) == 65535
        low = raises_naming("PKI_PORT", lambda: env.get_int({"PKI_PORT": "0"}, "PKI_PORT", 1, minimum=1))
        assert "minimum is 1" in low
        high = raises_naming(
            "PKI_PORT", lambda: env.get_int({"PKI_PORT": "65536"}, "PKI_PORT", 1, maximum=65535)
        )
        assert "maximum is 65535" in high


class TestGetChoice:
    def test_matches_case_insensitively(self) -> None:
        choices = ["DEBUG", "INFO"]
        assert env.get_choice({"PKI_LOG_LEVEL": "debug"}, "PKI_LOG_LEVEL", "INFO", choices) == "DEBUG"
        assert env.get_choice({}, "PKI_LOG_LEVEL", "INFO", choices) == "INFO"

    def test_bad(self) -> None:
        message = raises_naming(
            "PKI_LOG_LEVEL", lambda: env.get_choice({"PKI_LOG_LEVEL": "loud"}, "PKI_LOG_LEVEL", "INFO",
                                                    ["DEBUG", "INFO"])
        )
        assert "DEBUG, INFO" in message


class TestGetList:
    def test_split_and_default(self) -> None:
        assert env.get_list({"PKI_ALLOWED_HOSTS": " a.example , b.example,, "}, "PKI_ALLOWED_HOSTS", ["d"]) == [
            "a.example", "b.example",
        ]
        default = ["d"]
        result = env.get_list({}, "PKI_ALLOWED_HOSTS", default)
        assert result == ["d"] and result is not default

    def test_empty_list(self) -> None:
        assert env.get_list({"PKI_X": ","}, "PKI_X", ["d"]) == []
        raises_naming(
            "PKI_ALLOWED_HOSTS",
            lambda: env.get_list({"PKI_ALLOWED_HOSTS": " , "}, "PKI_ALLOWED_HOSTS", ["d"], allow_empty=False),
        )


class TestGetNetworks:
    def test_good(self) -> None:
        nets = env.get_networks({"PKI_NETS": "10.0.0.0/8, 192.168.1.7/24, fd00::/8"}, "PKI_NETS", [])
        assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8"]
        assert [str(n) for n in env.get_networks({}, "PKI_NETS", ["169.254.0.0/16"])] == ["169.254.0.0/16"]

    def test_bad(self) -> None:
        message = raises_naming(
            "PKI_NETS", lambda: env.get_networks({"PKI_NETS": "10.0.0.0/8,intranet"}, "PKI_NETS", [])
        )
        assert "'intranet'" in message


class TestGetHost:
    @pytest.mark.parametrize(("raw", "value"), [
        ("ca.example.com", "ca.example.com"), ("localhost", "localhost"), ("0.0.0.0", "0.0.0.0"),
        ("::", "::"), ("FD00:0::5", "fd00::5"), ("pki-1.internal.", "pki-1.internal."),
    ])
    def test_good(self, raw: str, value: str) -> None:
        assert env.get_host({"PKI_HOST": raw}, "PKI_HOST", "127.0.0.1") == value

    def test_default(self) -> None:
        assert env.get_host({}, "PKI_HOST", "127.0.0.1") == "127.0.0.1"

    @pytest.mark.parametrize("raw", ["ca.example.com:80", "[::1]", "http://ca", "a b", "-ca.example", "a..b"])
    def test_bad(self, raw: str) -> None:
        raises_naming("PKI_HOST", lambda: env.get_host({"PKI_HOST": raw}, "PKI_HOST", "127.0.0.1"))


class TestGetBaseUrl:
    @pytest.mark.parametrize(("raw", "value"), [
        ("https://ca.example.com", "https://ca.example.com"),
        ("https://ca.example.com/", "https://ca.example.com"),
        ("http://ca.example.com:8080/pki/", "http://ca.example.com:8080/pki"),
        ("http://[fd00::5]:8000", "http://[fd00::5]:8000"),
    ])
    def test_good(self, raw: str, value: str) -> None:
        assert env.get_base_url({"PKI_BASE_URL": raw}, "PKI_BASE_URL", "http://d") == value

    def test_default(self) -> None:
        assert env.get_base_url({}, "PKI_BASE_URL", "http://127.0.0.1:8000") == "http://127.0.0.1:8000"

    @pytest.mark.parametrize("raw", [
        "ftp://x", "ca.example.com", "https://", "https://ca.example.com/?a=1", "https://ca.example.com/#x",
        "https://ca.example.com:99999", "https://ca.example.com:port", "http://[::1", "https://u:pw@ca.example.com",
        "https://ca example.com",
    ])
    def test_bad(self, raw: str) -> None:
        raises_naming("PKI_BASE_URL", lambda: env.get_base_url({"PKI_BASE_URL": raw}, "PKI_BASE_URL", "http://d"))

    def test_password_is_not_shown(self) -> None:
        message = raises_naming(
            "PKI_BASE_URL", lambda: env.get_base_url({"PKI_BASE_URL": "https://u:hunter2@ca"}, "PKI_BASE_URL", "")
        )
        assert "hunter2" not in message


class TestDataDirectory:
    def test_default_is_var_in_the_working_directory(self, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        path = env.data_directory({}, create=False)
        assert path == tmp_path / "var" and not path.exists()
        assert env.data_directory({}) == tmp_path / "var"
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700

    def test_given_and_nested(self, tmp_path: Path) -> None:
        path = env.data_directory({"PKI_DATA_DIR": str(tmp_path / "a" / "b")})
        assert path == tmp_path / "a" / "b" and path.is_dir()

    def test_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        message = raises_naming(
            "PKI_DATA_DIR", lambda: env.data_directory({"PKI_DATA_DIR": str(tmp_path / "file")}, create=False)
        )
        assert "not a directory" in message

    def test_below_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        message = raises_naming(
            "PKI_DATA_DIR", lambda: env.data_directory({"PKI_DATA_DIR": str(tmp_path / "file" / "var")})
        )
        assert "cannot be created" in message

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
    def test_not_writable(self, tmp_path: Path) -> None:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            raises_naming("PKI_DATA_DIR", lambda: env.data_directory({"PKI_DATA_DIR": str(locked)}))
            raises_naming("PKI_DATA_DIR", lambda: env.data_directory({"PKI_DATA_DIR": str(locked / "var")}))
        finally:
            locked.chmod(0o700)


class TestSecretKey:
    def test_given(self, tmp_path: Path) -> None:
        key = "k" * 32
        assert env.secret_key({"PKI_SECRET_KEY": f" {key} "}, tmp_path / "var") == key
        assert not (tmp_path / "var").exists(), "a given key writes nothing"

    def test_too_short(self, tmp_path: Path) -> None:
        message = raises_naming(
            "PKI_SECRET_KEY", lambda: env.secret_key({"PKI_SECRET_KEY": "k" * 31}, tmp_path / "var")
        )
        assert "k" * 31 not in message, "the message must not show the secret"
        assert not (tmp_path / "var").exists()

    def test_generated_once(self, tmp_path: Path) -> None:
        first = env.secret_key({}, tmp_path / "var")
        file = tmp_path / "var" / "secret_key"
        assert file.read_text().strip() == first and len(first) >= 50
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert env.secret_key({"PKI_SECRET_KEY": ""}, tmp_path / "var") == first

    def test_empty_file(self, tmp_path: Path) -> None:
        (tmp_path / "secret_key").write_text("")
        message = raises_naming("PKI_SECRET_KEY", lambda: env.secret_key({}, tmp_path, wait=0.1))
        assert "empty" in message


class TestDatabase:
    def test_default_is_sqlite_in_the_data_directory(self, tmp_path: Path) -> None:
        config = env.database({}, tmp_path)
        assert config["ENGINE"] == "django.db.backends.sqlite3"
        assert config["NAME"] == str(tmp_path / "pki.sqlite3")
        assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        assert config["OPTIONS"]["timeout"] >= 5
        assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]

    def test_postgres(self, tmp_path: Path) -> None:
        config = env.database({"PKI_DATABASE_URL": "postgres://user:pw@host:5433/db"}, tmp_path)
        assert config == {
            "ENGINE": "pki_server.postgresql", "NAME": "db", "USER": "user", "PASSWORD": "pw",
            "HOST": "host", "PORT": "5433", "OPTIONS": {"server_side_binding": True, "prepare_threshold": 5},
            "CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True,
        }

    def test_postgres_escapes_options_and_no_port(self, tmp_path: Path) -> None:
        config = env.database(
            {"PKI_DATABASE_URL": "postgresql://pki%40corp:p%2Fw%40@db.internal/pki%20ca?sslmode=require"}, tmp_path
        )
        assert (config["USER"], config["PASSWORD"], config["HOST"], config["PORT"], config["NAME"]) == (
            "pki@corp", "p/w@", "db.internal", "", "pki ca",
        )
        assert config["OPTIONS"] == {"sslmode": "require", "server_side_binding": True, "prepare_threshold": 5}

    @pytest.mark.parametrize(("query", "binding", "threshold"), [
        ("prepare_threshold=none", True, None),
        ("prepare_threshold=0&server_side_binding=false", False, 0),
        ("server_side_binding=Off&prepare_threshold=12", False, 12),
    ])
    def test_postgres_statement_options(self, tmp_path: Path, query: str, binding: bool, threshold: int | None) -> None:
        config = env.database({"PKI_DATABASE_URL": f"postgres://db.internal/pki?{query}"}, tmp_path)
        assert config["OPTIONS"] == {"server_side_binding": binding, "prepare_threshold": threshold}

    @pytest.mark.parametrize(("query", "message"), [
        ("prepare_threshold=-1", "prepare_threshold must be a number of runs"),
        ("prepare_threshold=often", "prepare_threshold must be a number of runs"),
        ("server_side_binding=maybe", "server_side_binding must be true or false"),
    ])
    def test_postgres_bad_statement_options(self, tmp_path: Path, query: str, message: str) -> None:
        with pytest.raises(env.ConfigurationError, match=message) as raised:
            env.database({"PKI_DATABASE_URL": f"postgres://pki:s3cret@db.internal/pki?{query}"}, tmp_path)
        assert "s3cret" not in str(raised.value)

    def test_sqlite_urls(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        absolute = env.database({"PKI_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"}, tmp_path / "var")
        assert absolute["NAME"] == str(tmp_path / "x.sqlite3")
        assert absolute["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        monkeypatch.chdir(tmp_path)
        relative = env.database({"PKI_DATABASE_URL": "sqlite:///y.sqlite3"}, tmp_path / "var")
        assert relative["NAME"] == str(tmp_path / "y.sqlite3")

    @pytest.mark.parametrize("raw", [
        "mysql://u@h/db", "postgres://user@host:5432", "postgres://user@host:5432/", "postgres://u@h:99999/db",
        "postgres://u@[::1/db", "sqlite://", "sqlite://host/x.sqlite3", "sqlite:////no/such/folder/x.sqlite3",
        "just-a-path.sqlite3",
    ])
    def test_bad(self, raw: str, tmp_path: Path) -> None:
        raises_naming("PKI_DATABASE_URL", lambda: env.database({"PKI_DATABASE_URL": raw}, tmp_path))

    @pytest.mark.parametrize("raw", ["mysql://u:hunter2@h/db", "postgres://u:hunter2@[::1/db"])
    def test_password_is_not_shown(self, raw: str, tmp_path: Path) -> None:
        message = raises_naming("PKI_DATABASE_URL", lambda: env.database({"PKI_DATABASE_URL": raw}, tmp_path))
        assert "hunter2" not in message and "u:***@" in message


class TestRedisUrl:
    @pytest.mark.parametrize("raw", [
        "redis://127.0.0.1:6379/0", "rediss://:pw@redis.internal", "redis://redis", "unix:///run/redis.sock",
    ])
    def test_good(self, raw: str) -> None:
        assert env.redis_url({"PKI_REDIS_URL": raw}) == raw

    def test_unset(self) -> None:
        assert env.redis_url({}) is None and env.redis_url({"PKI_REDIS_URL": " "}) is None

    @pytest.mark.parametrize("raw", [
        "http://127.0.0.1:6379", "127.0.0.1:6379", "redis://", "redis://h:99999", "redis://h/zero", "unix://",
        "redis://[::1",
    ])
    def test_bad(self, raw: str) -> None:
        raises_naming("PKI_REDIS_URL", lambda: env.redis_url({"PKI_REDIS_URL": raw}))

    def test_password_is_not_shown(self) -> None:
        message = raises_naming("PKI_REDIS_URL", lambda: env.redis_url({"PKI_REDIS_URL": "http://:hunter2@h"}))
        assert "hunter2" not in message


# --- Start-up in a subprocess ---------------------------------------------------------------------

BAD_VALUES = [
    ("PKI_DATABASE_URL", "mysql://pki:secret@db/pki"),
    ("PKI_DATABASE_URL", "postgres://pki@db:5432"),
    ("PKI_PORT", "abc"),
    ("PKI_PORT", "70000"),
    ("PKI_HOST", "ca.example.com:8000"),
    ("PKI_DEBUG", "maybe"),
    ("PKI_BASE_URL", "ftp://x"),
    ("PKI_BASE_URL", "http://[::1"),
    ("PKI_SECRET_KEY", "too-short"),
    ("PKI_REDIS_URL", "http://127.0.0.1:6379"),
    ("PKI_REDIS_URL", "redis://127.0.0.1:99999"),
    ("PKI_ALLOWED_HOSTS", ","),
    ("PKI_LOG_LEVEL", "LOUD"),
    ("PKI_MIN_KEY_SIZE", "256"),
    ("PKI_DEFAULT_KEY_SIZE", "1024"),
    ("PKI_DEFAULT_KEY_SIZE", "3000"),
    ("PKI_CA_DEFAULT_EXPIRES", "0"),
    ("PKI_DEFAULT_EXPIRES", "ten"),
    ("PKI_DEFAULT_PROFILE", "nope"),
    ("PKI_ACME_NONCE_STORE", "disk"),
    ("PKI_ACME_NONCE_STORE", "redis"),  # without PKI_REDIS_URL
]


def assert_configuration_error(result: subprocess.CompletedProcess[str], name: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v}" for n, v in BAD_VALUES])
def test_bad_value_stops_start_up(name: str, value: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    result = run_pki(["check"], pki_env(data_dir, **{name: value}), tmp_path)
    line = assert_configuration_error(result, name)
    assert "secret" not in line.replace("PKI_SECRET_KEY", "").replace("secret key", ""), "password shown"
    assert not data_dir.exists(), "a bad value must write nothing"


def test_default_profile_error_lists_the_profiles(tmp_path: Path) -> None:
    result = run_pki(["check"], pki_env(tmp_path / "var", PKI_DEFAULT_PROFILE="nope"), tmp_path)
    line = assert_configuration_error(result, "PKI_DEFAULT_PROFILE")
    assert "'nope'" in line and "webserver" in line and "client" in line


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("not a folder")
    result = run_pki(["check"], pki_env(tmp_path / "var"), tmp_path)
    assert "not a directory" in assert_configuration_error(result, "PKI_DATA_DIR")


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_pki(["check"], pki_env(tmp_path / "file" / "var"), tmp_path)
    assert "cannot be created" in assert_configuration_error(result, "PKI_DATA_DIR")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_data_dir_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        result = run_pki(["check"], pki_env(locked), tmp_path)
        assert_configuration_error(result, "PKI_DATA_DIR")
    finally:
        locked.chmod(0o700)


def test_good_start_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    result = run_pki(["check"], pki_env(data_dir, PKI_BASE_URL="https://ca.example.com", PKI_DEBUG="off"),
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    assert "Traceback" not in result.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_secret_key_generated_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first = show_settings(pki_env(data_dir), tmp_path)["SECRET_KEY"]
    file = data_dir / "secret_key"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file.read_text().strip() == first and len(first) >= 50
    assert show_settings(pki_env(data_dir), tmp_path)["SECRET_KEY"] == first, "the key changed on restart"
    assert run_pki(["check"], pki_env(data_dir), tmp_path).returncode == 0
    assert file.read_text().strip() == first
    other = show_settings(pki_env(tmp_path / "other"), tmp_path)["SECRET_KEY"]
    assert other != first, "each data directory gets its own key"


def test_secret_key_given_is_used_and_not_stored(tmp_path: Path) -> None:
    key = "s3cret-" * 6
    shown = show_settings(pki_env(tmp_path / "var", PKI_SECRET_KEY=key), tmp_path)
    assert shown["SECRET_KEY"] == key
    assert not (tmp_path / "var" / "secret_key").exists()
    assert (tmp_path / "var").is_dir(), "the data directory is made even with a given key"


def test_concurrent_first_starts_agree_on_one_secret_key(tmp_path: Path) -> None:
    environ = {**pki_env(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "pki_server.settings"}
    script = "from django.conf import settings; print(settings.SECRET_KEY)"
    processes = [
        subprocess.Popen([sys.executable, "-c", script], env=environ, cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    keys = set()
    for process in processes:
        out, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err
        keys.add(out.strip())
    assert keys == {(tmp_path / "var" / "secret_key").read_text().strip()}


def test_data_dir_defaults_to_var_in_the_working_directory(tmp_path: Path) -> None:
    shown = show_settings(pki_env(None), tmp_path)
    var = tmp_path / "var"
    assert shown["DATA_DIR"] == str(var)
    assert shown["DATABASE"]["NAME"] == str(var / "pki.sqlite3")
    assert shown["KEY_LOCATION"] == str(var / "keys")
    assert (var / "secret_key").is_file()
    assert run_pki(["check"], pki_env(None), tmp_path).returncode == 0


def test_defaults(tmp_path: Path) -> None:
    shown = show_settings(pki_env(tmp_path / "var"), tmp_path)
    assert shown["DEBUG"] is False
    assert (shown["PKI_HOST"], shown["PKI_PORT"]) == ("127.0.0.1", 8000)
    assert shown["PKI_BASE_URL"] == "http://127.0.0.1:8000"
    assert shown["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]
    assert shown["CSRF_TRUSTED_ORIGINS"] == ["http://127.0.0.1:8000"]
    assert shown["DATABASE"]["ENGINE"] == "django.db.backends.sqlite3"
    assert shown["PKI_REDIS_URL"] is None
    assert shown["CHANNEL_LAYER"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
    assert shown["LOG_LEVEL"] == "WARNING"  # pki_env sets it; the default is checked below
    assert (shown["PKI_MIN_KEY_SIZE"], shown["PKI_DEFAULT_KEY_SIZE"]) == (2048, 4096)
    assert (shown["PKI_CA_DEFAULT_EXPIRES"], shown["PKI_DEFAULT_EXPIRES"]) == (3650, 365)
    assert shown["PKI_DEFAULT_PROFILE"] == "webserver"
    environ = pki_env(tmp_path / "var")
    del environ["PKI_LOG_LEVEL"]
    assert show_settings(environ, tmp_path)["LOG_LEVEL"] == "INFO"


def test_base_url_and_allowed_hosts_follow_host_and_port(tmp_path: Path) -> None:
    shown = show_settings(pki_env(tmp_path / "var", PKI_HOST="ca.internal", PKI_PORT="8443"), tmp_path)
    assert (shown["PKI_HOST"], shown["PKI_PORT"]) == ("ca.internal", 8443)
    assert shown["PKI_BASE_URL"] == "http://ca.internal:8443"
    assert shown["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]", "ca.internal"]

    shown = show_settings(pki_env(tmp_path / "var", PKI_HOST="fd00::5"), tmp_path)
    assert shown["PKI_BASE_URL"] == "http://[fd00::5]:8000"
    assert "[fd00::5]" in shown["ALLOWED_HOSTS"], "Django matches IPv6 hosts in brackets"


def test_base_url_given(tmp_path: Path) -> None:
    shown = show_settings(
        pki_env(tmp_path / "var", PKI_BASE_URL="https://CA.example.com/pki/", PKI_PORT="9000"), tmp_path
    )
    assert shown["PKI_BASE_URL"] == "https://CA.example.com/pki"
    assert shown["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]", "ca.example.com"]
    assert shown["CSRF_TRUSTED_ORIGINS"] == ["https://CA.example.com"]
    assert shown["SESSION_COOKIE_SECURE"] is True
    assert shown["PKI_PORT"] == 9000


def test_allowed_hosts_given(tmp_path: Path) -> None:
    shown = show_settings(pki_env(tmp_path / "var", PKI_ALLOWED_HOSTS="ca.example.com, .internal"), tmp_path)
    assert shown["ALLOWED_HOSTS"] == ["ca.example.com", ".internal"]


def test_postgres_url_gives_the_database_entry(tmp_path: Path) -> None:
    shown = show_settings(pki_env(tmp_path / "var", PKI_DATABASE_URL="postgres://user:pw@host:5433/db"), tmp_path)
    assert shown["DATABASE"] == {
        "ENGINE": "pki_server.postgresql", "NAME": "db", "USER": "user", "PASSWORD": "pw",
        "HOST": "host", "PORT": "5433", "OPTIONS": {"server_side_binding": True, "prepare_threshold": 5},
            "CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True,
    }


def test_redis_url_switches_the_channel_layer(tmp_path: Path) -> None:
    shown = show_settings(pki_env(tmp_path / "var", PKI_REDIS_URL="redis://127.0.0.1:6379/1"), tmp_path)
    assert shown["PKI_REDIS_URL"] == "redis://127.0.0.1:6379/1"
    assert shown["CHANNEL_LAYER"] == {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/1", "socket_timeout": 30}]},
    }


def test_policy_values(tmp_path: Path) -> None:
    shown = show_settings(pki_env(
        tmp_path / "var", PKI_DEBUG="yes", PKI_LOG_LEVEL="debug", PKI_MIN_KEY_SIZE="1024",
        PKI_DEFAULT_KEY_SIZE="2048", PKI_CA_DEFAULT_EXPIRES="30", PKI_DEFAULT_EXPIRES="7",
        PKI_DEFAULT_PROFILE="Client",
    ), tmp_path)
    assert shown["DEBUG"] is True
    assert shown["LOG_LEVEL"] == "DEBUG"
    assert (shown["PKI_MIN_KEY_SIZE"], shown["PKI_DEFAULT_KEY_SIZE"]) == (1024, 2048)
    assert (shown["PKI_CA_DEFAULT_EXPIRES"], shown["PKI_DEFAULT_EXPIRES"]) == (30, 7)
    assert shown["PKI_DEFAULT_PROFILE"] == "client"


def test_settings_in_this_process_are_the_documented_types() -> None:
    from django.conf import settings

    assert isinstance(settings.PKI_DEFAULT_EXPIRES, timedelta)
    assert isinstance(settings.PKI_CA_DEFAULT_EXPIRES, timedelta)
    backends: dict[str, Any] = settings.PKI_KEY_BACKENDS
    assert backends["default"]["OPTIONS"]["storage_alias"] == "pki_keys"


# --- docs/settings.md: the settings module and key backend it shows really work --------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def documented_module(first_line: str) -> list[str]:
    """The ```python blocks of docs/settings.md whose first line is ``first_line``."""
    import re

    bodies = re.findall(r"^```python\n(.*?)^```", DOCS.read_text(), re.M | re.S)
    found = [body for body in bodies if body.startswith(first_line + "\n")]
    assert found, f"docs/settings.md has no python block starting with {first_line!r}"
    return found


USE_TOKEN_BACKEND = """
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pki_server.core.exceptions import KeyBackendError
from pki_server.core.key_backends import key_backends
from pki_server.core.models import Certificate, CertificateAuthority

token = key_backends["token"]
options = token.create_private_key_options_class(elliptic_curve="P-384")
root = CertificateAuthority.objects.init("hsm-root", token, options, "/CN=HSM Root")
inter = CertificateAuthority.objects.init(
    "hsm-inter", token, token.create_private_key_options_class(key_type="Ed25519"), "/CN=HSM Inter", parent=root)
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
    ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
cert = Certificate.objects.create_cert(inter, None, csr, subject="/CN=hsm.example.com")
cert.pub.verify_directly_issued_by(inter.pub)
inter.pub.verify_directly_issued_by(root.pub)
cert.revoke()
try:
    token.load_private_key(root, token.get_use_private_key_options(None))
except KeyBackendError as ex:
    print("refused:", ex)
print(root.key_backend_options, inter.key_backend_options, cert.status)
"""


def test_documented_key_backend_and_settings_module(tmp_path: Path) -> None:
    """The token backend and the settings modules of docs/settings.md, used as the docs say."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "token_backend.py").write_text(documented_module("# token_backend.py")[0])
    storages_settings, token_settings = documented_module("# mysettings.py")
    (code / "mysettings.py").write_text(token_settings)
    (code / "storagesettings.py").write_text(storages_settings)
    environ = {**pki_env(tmp_path / "var"), "PYTHONPATH": str(code), "DJANGO_SETTINGS_MODULE": "mysettings"}

    assert run_pki(["migrate", "--no-input", "-v", "0"], environ, tmp_path).returncode == 0
    result = run_pki(["shell", "--no-imports", "-c", USE_TOKEN_BACKEND], environ, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "refused: hsm-root: keys never leave the token."
    assert lines[1] == "{'handle': 'pki/hsm-root'} {'handle': 'pki/hsm-inter'} revoked"
    assert not (tmp_path / "var" / "keys").exists(), "the token backend wrote key files"

    # The storages example: the default backend's keys go to ca-keys/, the "offline" one's elsewhere.
    environ["DJANGO_SETTINGS_MODULE"] = "storagesettings"
    make_cas = (
        "from pki_server.core.key_backends import key_backends as kb\n"
        "from pki_server.core.models import CertificateAuthority as CA\n"
        "for alias in ('default', 'offline'):\n"
        "    opts = kb[alias].create_private_key_options_class(path='ca', elliptic_curve='P-256')\n"
        "    CA.objects.init(alias + '-ca', kb[alias], opts, '/CN=' + alias)\n"
    )
    result = run_pki(["shell", "--no-imports", "-c", make_cas], environ, tmp_path)
    assert result.returncode == 0, result.stderr
    for folder in ("ca-keys", "offline-keys"):
        files = list((tmp_path / "var" / folder / "ca").glob("*.key"))
        assert len(files) == 1, folder
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600

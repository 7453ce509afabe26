"""The examples in README.md and docs/ run as tests.

- ```pycon blocks run as doctests; the blocks of one file share their names, in order.
- ```console blocks: each ``$ command`` (with ``\\`` continuations) runs in bash, in a fresh
  folder per file with its own PKI_DATA_DIR and ``pki-server`` on PATH, and must exit 0. A block
  whose info string says ``norun`` (long-running or interactive commands) is skipped.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("**/*.md")])
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)


def blocks(path: Path, language: str) -> list[tuple[int, str, str]]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        info = match.group("info").strip().split()
        if info and info[0] == language:
            line = text.count("\n", 0, match.start()) + 2
            found.append((line, " ".join(info[1:]), match.group("body")))
    return found


def files_with(language: str) -> list[Path]:
    return [path for path in DOC_FILES if blocks(path, language)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", files_with("pycon"), ids=lambda p: str(p.relative_to(ROOT)))
def test_pycon_examples(path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_MIN_KEY_SIZE = 1024  # the docs show the seed's key_size=1024 example
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict[str, object] = {}
    for line, _info, body in blocks(path, "pycon"):
        test = parser.get_doctest(body, globs, f"{path.name}:{line}", str(path), line)
        runner.run(test, out=sys.stdout.write, clear_globs=False)
        globs = test.globs  # doctest copies the names; carry them on to the next block
    assert runner.failures == 0, f"{runner.failures} example(s) in {path.name} failed; see the output above"
    assert runner.tries > 0


def console_commands(body: str) -> list[str]:
    commands: list[str] = []
    pending: str | None = None
    for raw in body.splitlines():
        if pending is not None:
            pending += "\n" + raw
        elif raw.startswith("$ "):
            pending = raw[2:]
        else:
            continue  # output shown in the docs
        if pending.endswith("\\"):
            continue
        commands.append(pending)
        pending = None
    return commands


@pytest.mark.parametrize("path", files_with("console"), ids=lambda p: str(p.relative_to(ROOT)))
def test_console_examples(path: Path, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PKI_")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PKI_DATA_DIR": str(tmp_path / "var"),
        "PKI_DEFAULT_KEY_SIZE": "2048",
        "PKI_LOG_LEVEL": "WARNING",
    }
    ran = 0
    for line, info, body in blocks(path, "console"):
        if "norun" in info:
            continue
        for command in console_commands(body):
            result = subprocess.run(
                ["bash", "-c", command.replace(".venv/bin/", "")], cwd=tmp_path, env=env,
                capture_output=True, text=True, timeout=120, check=False,
            )
            assert result.returncode == 0, (
                f"{path.name}:{line}: `{command}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
            ran += 1
    assert ran > 0, f"{path.name} has console blocks but none ran"

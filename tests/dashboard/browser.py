"""A real browser for the dashboard's tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` is not run): `launch()` starts the
system's Chromium. `ConsoleWatch` collects what the browser reports of a page — console errors and
warnings, uncaught exceptions, and Content-Security-Policy violations — so a test can assert a page is
clean. Screenshots go to `screenshot_dir()`: `$PKI_TEST_ARTIFACTS/dashboard/`, by default
`test-artifacts/dashboard/` under the repository's root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 15_000  # any one browser action or wait

# Loopback only, nothing fetched by the browser on its own (updates, sync, field trials ...).
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, Chromium's sandbox does not start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records CSP violations as the page sees them (the securitypolicyviolation event). Playwright adds it
# through the DevTools protocol, so the page's own CSP does not apply to it.
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def screenshot_dir() -> Path:
    root = Path(os.environ.get("PKI_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    directory = root / "dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium of the system, with a fresh profile of its own (Playwright makes one per launch)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                      timeout=30_000)


@dataclass
class ConsoleWatch:
    """What the browser reported of one page (and of the pages it navigated to)."""

    page: Page
    messages: list[str] = field(default_factory=list)  # "type: text" of every console message
    errors: list[str] = field(default_factory=list)  # console errors (a CSP violation is one) and exceptions

    @classmethod
    def attach(cls, page: Page) -> ConsoleWatch:
        watch = cls(page)
        page.add_init_script(CSP_LISTENER)
        page.on("console", watch._console)
        page.on("pageerror", lambda error: watch.errors.append(f"uncaught exception: {error}"))
        return watch

    def _console(self, message: ConsoleMessage) -> None:
        line = f"{message.type}: {message.text}"
        self.messages.append(line)
        if message.location.get("url", "").endswith("/favicon.ico"):
            return  # Chromium asks for /favicon.ico by itself; the dashboard has none (a 404 in the console)
        if message.type == "error" or "Content Security Policy" in message.text:
            self.errors.append(line)

    def csp_violations(self) -> list[str]:
        """Violations the current document saw (its listener starts anew with each document)."""
        return list(self.page.evaluate("window.__cspViolations || []"))

    def assert_clean(self, what: str) -> None:
        """No console error, no uncaught exception, no CSP violation so far."""
        violations = self.csp_violations()
        assert not self.errors and not violations, (
            f"{what}: errors {self.errors}, CSP violations {violations}; console: {self.messages}")


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of what the browser shows, kept as a test artifact."""
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000, path
    return path


def sign_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Fill in and send the dashboard's login form (the page must show it)."""
    assert page.url.startswith(f"{base_url}/dashboard/login/"), page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")

"""The dashboard in a real browser (issue 7): headless Chromium against `pki-server serve`.

A staff user signs in through the form and opens every kind of page; each page is checked for its real
content and for a clean console (no JavaScript error, no Content-Security-Policy violation), and a
full-page screenshot of it is kept (tests/dashboard/browser.py says where). A certificate is revoked from
its page and OCSP then answers *revoked*; the overview's live feed shows a real ACME order's events
without a reload; users who are not staff, or lack the permissions, are refused.

Needs Debian's `chromium` and the `playwright` package (never `playwright install`); skips without them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.acme import flow_helpers
from tests.acme.server import PkiServer, running_server
from tests.dashboard.browser import CHROMIUM, TIMEOUT_MS, ConsoleWatch, launch, screenshot, sign_in
from tests.dashboard.live_client import VIEW_PERMISSIONS

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)", allow_module_level=True)
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

PASSWORD = "correct horse battery staple"
LIVE_TIMEOUT_MS = 20_000  # a live event must show within this


def users_code() -> str:
    """Python for ``pki-server shell -c``: an operator who may revoke, a user who is not staff, and a
    staff user without any permission."""
    operator = [*VIEW_PERMISSIONS, "change_certificate"]
    return ("from django.contrib.auth.models import Permission, User; "
            f"ops = User.objects.create_user('ops', password={PASSWORD!r}, is_staff=True); "
            f"ops.user_permissions.set(Permission.objects.filter(codename__in={operator!r})); "
            f"User.objects.create_user('visitor', password={PASSWORD!r}); "
            f"User.objects.create_user('bystander', password={PASSWORD!r}, is_staff=True)")


@dataclass
class Issued:
    """A certificate of a real ACME order."""

    name: str  # its CN
    alt: str  # a second DNS name, in its SANs only
    certificate: x509.Certificate
    account: str  # the ACME account's slug

    @property
    def serial(self) -> str:
        return f"{self.certificate.serial_number:X}"  # as the server stores and shows it


def obtain(server: PkiServer, label: str) -> Issued:
    """A certificate for two new names, through a new ACME account's order."""
    acme = flow_helpers.register(server)
    names = [flow_helpers.unique_name(label), flow_helpers.unique_name(f"{label}-alt")]
    _orderr, certificate, _key = flow_helpers.obtain(server, acme, names)
    # The server chooses which name is the CN; the other one is in the SANs only.
    (cn,) = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert cn.value in names, (cn, names)
    (alt,) = (name for name in names if name != cn.value)
    return Issued(str(cn.value), alt, certificate, flow_helpers.account_url(acme).rpartition("/")[2])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiServer]:
    with running_server(tmp_path_factory.mktemp("browser") / "server") as server:
        server.manage("shell", "-c", users_code())
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, server: PkiServer) -> Iterator[Page]:
    """A page of a fresh browser context: no cookies, no session."""
    context = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def signed_in(page: Page, server: PkiServer, username: str = "ops") -> None:
    page.goto("/dashboard/login/")
    sign_in(page, server.base_url, username, PASSWORD)


def ca_rows(server: PkiServer) -> dict[str, str]:
    """Name → serial of the server's CAs (`pki-server init` made a root and an intermediate)."""
    return {name: serial for name, serial in server.query("SELECT name, serial FROM pki_core_certificateauthority")}


def with_colons(serial: str) -> str:
    """A serial as `openssl x509 -serial` or a browser shows it, in lower case: `4a:e2:…`."""
    padded = serial if len(serial) % 2 == 0 else f"0{serial}"
    return ":".join(padded[i:i + 2] for i in range(0, len(padded), 2)).lower()


def url_in_aia(certificate: x509.Certificate, method: x509.ObjectIdentifier) -> str:
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return str(next(d.access_location.value for d in aia if d.access_method == method))


def ocsp_answer(certificate: x509.Certificate) -> ocsp.OCSPResponse:
    """What the OCSP responder in the certificate's AIA says of it (a POST, RFC 6960 Appendix A.1)."""
    issuer_der = httpx.get(url_in_aia(certificate, AuthorityInformationAccessOID.CA_ISSUERS), timeout=10)
    assert issuer_der.status_code == 200, issuer_der.text
    issuer = x509.load_der_x509_certificate(issuer_der.content)
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
    response = httpx.post(url_in_aia(certificate, AuthorityInformationAccessOID.OCSP),
                          content=request.public_bytes(serialization.Encoding.DER),
                          headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.serial_number == certificate.serial_number
    return answer


# --- The pages ----------------------------------------------------------------------------------------

def test_every_page_signed_in_through_the_form(server: PkiServer, page: Page) -> None:
    issued = obtain(server, "pages")
    cas = ca_rows(server)
    assert set(cas) == {"root", "intermediate"}, cas
    watch = ConsoleWatch.attach(page)
    base = server.base_url

    # Not signed in: the login page.
    page.goto("/dashboard/")
    assert page.url == f"{base}/dashboard/login/?next=/dashboard/"
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("header nav")).to_have_count(0)
    watch.assert_clean("login page")
    screenshot(page, "01-login")

    # Signed in: the overview, with the CAs, the chart, and the live feed connected.
    sign_in(page, base, "ops", PASSWORD)
    assert page.url == f"{base}/dashboard/"
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator(".logout .user")).to_have_text("ops")
    for name in cas:
        expect(page.locator("#cas tbody a", has_text=re.compile(f"^{name}$"))).to_have_count(1)
    chart = page.locator("#issuance svg.chart")
    expect(chart).to_have_count(1)
    values = [int(v) for v in page.locator("#issuance rect.chart-bar").evaluate_all(
        "bars => bars.map(bar => bar.getAttribute('data-value'))")]
    assert len(values) >= 28 and values[-1] >= 1, values  # a bar a day; today's counts our certificate
    assert page.locator("#issuance rect.chart-bar").last.evaluate("bar => bar.getBBox().height") > 0
    expect(page.locator("#live-events")).to_have_attribute("data-state", "open")
    watch.assert_clean("overview")
    screenshot(page, "02-overview")

    # The intermediate's page, from the overview's link.
    with page.expect_navigation():
        page.locator("#cas tbody a", has_text=re.compile("^intermediate$")).click()
    assert page.url == f"{base}/dashboard/cas/{cas['intermediate']}/"
    expect(page.locator("h1")).to_contain_text("intermediate")
    expect(page.locator("main dl.fields").first).to_contain_text(cas["intermediate"])
    expect(page.locator("#crl")).to_contain_text(f"/crl/{cas['intermediate']}.crl")
    expect(page.locator("#ocsp")).to_contain_text(f"/ocsp/{cas['intermediate']}/")
    expect(page.locator("#recent tbody")).to_contain_text(issued.serial)
    watch.assert_clean("CA page")
    screenshot(page, "03-ca")

    # The certificate list, searched through its form by CN, by SAN and by serial.
    page.click("header nav >> text=Certificates")
    assert page.url == f"{base}/dashboard/certificates/"
    expect(page.locator("table.results tbody")).to_contain_text(issued.serial)
    for term in (issued.name, f"DNS:{issued.alt}", with_colons(issued.serial)):
        page.fill("#id_q", term)
        with page.expect_navigation():
            page.click("form.filters button[type=submit]")
        expect(page.locator("#result-count")).to_have_text("1 certificate")
        expect(page.locator("table.results tbody tr")).to_have_count(1)
        expect(page.locator("table.results tbody td.mono")).to_have_text(issued.serial)
        expect(page.locator("#id_q")).to_have_value(term)
    page.fill("#id_q", "no-such-host.test.internal")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    expect(page.locator("#result-count")).to_have_text("0 certificates")
    page.fill("#id_q", issued.name)
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    watch.assert_clean("certificate list")
    screenshot(page, "04-certificates")

    # The certificate's page, from the search result.
    with page.expect_navigation():
        page.locator("table.results tbody a", has_text=issued.name).click()
    assert page.url == f"{base}/dashboard/certificates/{issued.serial}/"
    expect(page.locator("h1 .status")).to_have_text("valid")
    fields = page.locator("main dl.fields").first
    expect(fields).to_contain_text(issued.serial)
    expect(fields).to_contain_text(f"DNS:{issued.alt}")
    expect(fields).to_contain_text(f"account {issued.account}")
    extensions = page.locator("table.extensions")
    for text in ("subjectAltName", "authorityInfoAccess", f"/ocsp/{cas['intermediate']}/", issued.alt):
        expect(extensions).to_contain_text(text)
    expect(page.locator("#revoke button[type=submit]")).to_have_text("Revoke certificate")
    watch.assert_clean("certificate page")
    screenshot(page, "05-certificate")

    # The ACME accounts, and the account that ordered the certificate.
    page.click("header nav >> text=ACME accounts")
    assert page.url == f"{base}/dashboard/accounts/"
    expect(page.locator("table.results tbody a", has_text=issued.account)).to_have_count(1)
    watch.assert_clean("account list")
    screenshot(page, "06-accounts")
    with page.expect_navigation():
        page.locator("table.results tbody a", has_text=issued.account).click()
    assert page.url == f"{base}/dashboard/accounts/{issued.account}/"
    expect(page.locator("h1")).to_contain_text(issued.account)
    orders = page.locator("#orders tbody")
    expect(orders).to_contain_text(issued.name)
    expect(orders).to_contain_text(issued.alt)
    expect(orders.locator(".status")).to_have_text("valid")
    expect(orders.locator("a.mono")).to_have_text(issued.serial)
    authorizations = page.locator("#authorizations tbody")
    expect(authorizations).to_contain_text(issued.name)
    expect(authorizations.locator("tr", has_text="http-01").first).to_contain_text("valid")
    watch.assert_clean("account page")
    screenshot(page, "07-account")

    # Signing out ends the session: the dashboard asks for the login again.
    with page.expect_navigation():
        page.click(".logout button")
    page.goto("/dashboard/")
    assert page.url.startswith(f"{base}/dashboard/login/")
    watch.assert_clean("after signing out")


def test_the_console_watch_sees_a_csp_violation(server: PkiServer, page: Page) -> None:
    """The check of the pages can fail: an inline script, which the CSP refuses, is reported."""
    watch = ConsoleWatch.attach(page)
    page.goto("/dashboard/login/")
    watch.assert_clean("login page")
    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.inlineRan = true;";
        document.body.appendChild(script);
    }""")
    assert page.evaluate("window.inlineRan === undefined")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert any(v.startswith("script-src") for v in watch.csp_violations()), watch.csp_violations()
    assert any("Content Security Policy" in e for e in watch.errors), watch.messages
    with pytest.raises(AssertionError, match="CSP violations"):
        watch.assert_clean("login page with an inline script")


# --- Revoking from the page ----------------------------------------------------------------------------

def test_revoke_from_the_certificate_page(server: PkiServer, page: Page) -> None:
    issued = obtain(server, "revoke")
    assert ocsp_answer(issued.certificate).certificate_status == ocsp.OCSPCertStatus.GOOD
    watch = ConsoleWatch.attach(page)
    signed_in(page, server)

    page.goto(f"/dashboard/certificates/{issued.serial}/")
    expect(page.locator("h1 .status")).to_have_text("valid")
    page.select_option("#revoke select[name=reason]", "key_compromise")
    with page.expect_navigation():
        page.click("#revoke button[type=submit]")

    assert page.url == f"{server.base_url}/dashboard/certificates/{issued.serial}/"  # redirected back
    expect(page.locator(".message-success")).to_contain_text(
        f"Revoked {issued.name} (serial {issued.serial}), reason: key compromise.")
    expect(page.locator("h1 .status")).to_have_text("revoked")
    expect(page.locator("#revoked-reason")).to_have_text("key_compromise")
    expect(page.locator("#revoke")).to_have_count(0)  # nothing left to revoke
    watch.assert_clean("revoked certificate page")
    screenshot(page, "08-certificate-revoked")

    answer = ocsp_answer(issued.certificate)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise
    ((revoked, reason),) = server.query("SELECT revoked, revoked_reason FROM pki_core_certificate WHERE serial = ?",
                                        issued.serial)
    assert (revoked, reason) == (1, "key_compromise")


# --- The live feed -----------------------------------------------------------------------------------------

SHOWN = """([name, kinds]) => kinds.every(kind =>
    Array.from(document.querySelectorAll("#live-event-list li.event-" + kind))
         .some(item => item.textContent.includes(name)))"""


def test_live_events_of_an_acme_order(server: PkiServer, page: Page) -> None:
    watch = ConsoleWatch.attach(page)
    signed_in(page, server)
    assert page.url == f"{server.base_url}/dashboard/"
    feed = page.locator("#live-events")
    expect(feed).to_have_attribute("data-state", "open")
    expect(page.locator("#live-event-list li")).to_have_count(0)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    issued = obtain(server, "live")
    kinds = ["order-created", "challenge-valid", "certificate-issued"]
    page.wait_for_function(SHOWN, arg=[issued.name, kinds], timeout=LIVE_TIMEOUT_MS)

    assert page.evaluate("window.sameDocument") is True
    expect(feed).to_have_attribute("data-state", "open")
    events = page.locator("#live-event-list li")
    created = page.locator("#live-event-list li.event-order-created .event-summary")
    expect(created).to_contain_text("New order for ")
    expect(created).to_contain_text(", ".join(sorted([issued.name, issued.alt])))
    for name in (issued.name, issued.alt):  # an authorization, and so a validation, per name
        expect(page.locator("#live-event-list li.event-challenge-valid .event-summary", has_text=name)).to_have_text(
            f"http-01 validation of {name} succeeded")
    issued_event = page.locator("#live-event-list li.event-certificate-issued")
    expect(issued_event.locator(".event-summary")).to_contain_text(issued.serial)
    expect(issued_event.locator("a.event-link")).to_have_attribute(
        "href", f"/dashboard/certificates/{issued.serial}/")
    # Newest first: the order's creation is the last of its events in the list.
    classes = events.evaluate_all("items => items.map(item => item.className)")
    assert classes[-1] == "event event-order-created", classes
    watch.assert_clean("overview with live events")
    screenshot(page, "09-overview-live-events")

    # An event's link leads to the certificate's page.
    with page.expect_navigation():
        issued_event.locator("a.event-link").click()
    expect(page.locator("main dl.fields").first).to_contain_text(issued.serial)
    watch.assert_clean("certificate page from a live event")


# --- Who is refused --------------------------------------------------------------------------------------

def test_a_user_who_is_not_staff_cannot_sign_in(server: PkiServer, page: Page) -> None:
    watch = ConsoleWatch.attach(page)
    page.goto("/dashboard/login/")
    sign_in(page, server.base_url, "visitor", PASSWORD)
    assert page.url == f"{server.base_url}/dashboard/login/"
    expect(page.locator("ul.errorlist")).to_contain_text("Please enter the correct username and password for a "
                                                         "staff account")
    screenshot(page, "10-login-refused")
    page.goto("/dashboard/")
    assert page.url == f"{server.base_url}/dashboard/login/?next=/dashboard/"
    response = page.goto("/dashboard/certificates/")
    assert response is not None and page.url.startswith(f"{server.base_url}/dashboard/login/")
    watch.assert_clean("login refused")


def test_staff_without_permissions_gets_403(server: PkiServer, page: Page) -> None:
    signed_in(page, server, "bystander")
    # Signed in, but the overview needs three view permissions.
    response = page.goto("/dashboard/")
    assert response is not None and response.status == 403
    assert page.url == f"{server.base_url}/dashboard/"
    for path in ("/dashboard/certificates/", "/dashboard/accounts/"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.locator("body")).to_contain_text("403 Forbidden")
    screenshot(page, "11-forbidden")

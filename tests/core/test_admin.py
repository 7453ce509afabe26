"""The Django admin: lists, search, filters, revocation, downloads, and no private key anywhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pki_server.core import signals
from pki_server.core.key_backends import db as db_backend
from pki_server.core.key_backends import key_backends
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.utils import x509_name
from tests.fixtures import issue

CERT_LIST = reverse("admin:pki_core_certificate_changelist")
CA_LIST = reverse("admin:pki_core_certificateauthority_changelist")



@pytest.fixture
def db_ca(root: CertificateAuthority) -> CertificateAuthority:
    """An intermediate whose private key sits in its own row (the "db" key backend)."""
    ca = CertificateAuthority.objects.init(
        "db-intermediate", key_backends["db"], db_backend.CreatePrivateKeyOptions(elliptic_curve="P-256"),
        x509_name("/O=Example/CN=DB Intermediate"), parent=root,
    )
    assert "PRIVATE KEY" in ca.key_backend_options["private_key"]
    return ca


@pytest.fixture
def certs(intermediate: CertificateAuthority, db_ca: CertificateAuthority) -> dict[str, Certificate]:
    found = {
        "www": issue(intermediate, "www.example.com", sans=["www.example.com", "alt.example.net"]),
        "client": issue(intermediate, "client.example.com", profile="client"),
        "soon": issue(intermediate, "soon.example.com", expires_in=timedelta(days=5)),
        "month": issue(intermediate, "month.example.com", expires_in=timedelta(days=20)),
        "quarter": issue(intermediate, "quarter.example.com", expires_in=timedelta(days=60)),
        "old": issue(intermediate, "old.example.com", expires_in=timedelta(days=-1)),
        "gone": issue(intermediate, "gone.example.com"),
        "dbcert": issue(db_ca, "db.example.com"),
    }
    found["gone"].revoke("superseded")
    return found


@pytest.fixture
def revocations() -> Iterator[list[tuple[Any, Any]]]:
    """Every post_revoke_cert the test causes, as (sender, cert)."""
    seen: list[tuple[Any, Any]] = []

    def receiver(sender: Any, cert: Any, **kwargs: Any) -> None:
        seen.append((sender, cert))

    signals.post_revoke_cert.connect(receiver)
    yield seen
    signals.post_revoke_cert.disconnect(receiver)


def listed(client: Client, url: str, **params: str) -> set[int]:
    response = client.get(url, params)
    assert response.status_code == 200, response.content[:500]
    return {obj.pk for obj in response.context["cl"].result_list}


def pks(*objects: Any) -> set[int]:
    return {obj.pk for obj in objects}


def openssl_serial(cert: Certificate) -> str:
    """The serial as ``openssl x509 -serial`` style tools print it: lower-case bytes with colons."""
    number = cert.pub.serial_number
    return number.to_bytes(number.bit_length() // 8 + 1, "big").hex(":")


# --- Lists, search, filters ----------------------------------------------------------------------


def rows(html: str) -> dict[str, str]:
    """The result table's rows by the serial they show."""
    found = {}
    for row in re.findall(r"<tr>.*?</tr>", html.split('id="result_list"', 1)[1], re.S):
        serial = re.search(r'<td class="field-serial">([0-9A-F]+)</td>', row)
        if serial:
            found[serial.group(1)] = row
    return found


def test_certificate_list_columns(admin_client: Client, certs: dict[str, Certificate]) -> None:
    assert listed(admin_client, CERT_LIST) == pks(*certs.values())
    table = rows(admin_client.get(CERT_LIST).content.decode())
    assert set(table) == {cert.serial for cert in certs.values()}
    www = table[certs["www"].serial]
    for text in ("www.example.com", ">intermediate<", ">valid<", ">webserver<",
                 reverse("admin:pki_core_certificate_pem", args=[certs["www"].pk]),
                 reverse("admin:pki_core_certificate_bundle", args=[certs["www"].pk])):
        assert text in www, text
    assert ">client<" in table[certs["client"].serial]
    assert ">revoked<" in table[certs["gone"].serial]
    assert ">expired<" in table[certs["old"].serial]
    assert ">db-intermediate<" in table[certs["dbcert"].serial]


def test_ca_list_columns(admin_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                         db_ca: CertificateAuthority) -> None:
    assert listed(admin_client, CA_LIST) == pks(root, intermediate, db_ca)
    table = rows(admin_client.get(CA_LIST).content.decode())
    assert set(table) == {root.serial, intermediate.serial, db_ca.serial}
    row = table[intermediate.serial]
    for text in ("Example Intermediate", ">root<", ">valid<",
                 reverse("admin:pki_core_certificateauthority_bundle", args=[intermediate.pk])):
        assert text in row, text
    # ACME on (intermediate) and off (root): Django renders booleans as icons.
    assert re.search(r'field-acme_enabled"><img src="[^"]*icon-yes', row)
    assert re.search(r'field-acme_enabled"><img src="[^"]*icon-no', table[root.serial])


@pytest.mark.parametrize("term, expected", [
    ("www.example.com", ["www"]),
    ("alt.example.net", ["www"]),  # only in the SAN
    ("DNS:alt.example", ["www"]),
    ("MONTH.EXAMPLE", ["month"]),
    ("db.example.com", ["dbcert"]),
])
def test_certificate_search_by_cn_and_san(admin_client: Client, certs: dict[str, Certificate], term: str,
                                          expected: list[str]) -> None:
    assert listed(admin_client, CERT_LIST, q=term) == pks(*(certs[name] for name in expected))


def test_certificate_search_by_serial_forms(admin_client: Client, certs: dict[str, Certificate]) -> None:
    cert = certs["quarter"]
    for term in (cert.serial, cert.serial.lower(), openssl_serial(cert), openssl_serial(cert).upper(),
                 f"  {openssl_serial(cert)} "):
        assert listed(admin_client, CERT_LIST, q=term) == {cert.pk}, term


def test_ca_search(admin_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                   db_ca: CertificateAuthority) -> None:
    assert listed(admin_client, CA_LIST, q="db-intermediate") == {db_ca.pk}
    assert listed(admin_client, CA_LIST, q="Example Root") == {root.pk}
    number = intermediate.pub.serial_number
    colons = number.to_bytes(number.bit_length() // 8 + 1, "big").hex(":")
    assert listed(admin_client, CA_LIST, q=colons) == {intermediate.pk}
    assert listed(admin_client, CA_LIST, q="no-such-ca") == set()


def test_certificate_filters(admin_client: Client, certs: dict[str, Certificate],
                             intermediate: CertificateAuthority, db_ca: CertificateAuthority) -> None:
    c = certs
    assert listed(admin_client, CERT_LIST, status="revoked") == pks(c["gone"])
    assert listed(admin_client, CERT_LIST, status="expired") == pks(c["old"])
    assert listed(admin_client, CERT_LIST, status="valid") == pks(
        c["www"], c["client"], c["soon"], c["month"], c["quarter"], c["dbcert"])
    assert listed(admin_client, CERT_LIST, expires="expired") == pks(c["old"])
    assert listed(admin_client, CERT_LIST, expires="7") == pks(c["soon"])
    assert listed(admin_client, CERT_LIST, expires="30") == pks(c["soon"], c["month"])
    assert listed(admin_client, CERT_LIST, expires="90") == pks(c["soon"], c["month"], c["quarter"])
    assert listed(admin_client, CERT_LIST, ca__id__exact=str(db_ca.pk)) == pks(c["dbcert"])
    assert listed(admin_client, CERT_LIST, profile__exact="client") == pks(c["client"])
    assert listed(admin_client, CERT_LIST, profile__exact="webserver", status="revoked") == pks(c["gone"])


def test_ca_filters(admin_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority) -> None:
    intermediate.revoke("cessation_of_operation")
    assert listed(admin_client, CA_LIST, status="revoked") == {intermediate.pk}
    assert listed(admin_client, CA_LIST, status="valid") == {root.pk}
    assert listed(admin_client, CA_LIST, expires="90") == set()
    assert listed(admin_client, CA_LIST, acme_enabled__exact="1") == {intermediate.pk}


# --- Detail pages ------------------------------------------------------------------------------------


def test_certificate_detail_is_read_only(admin_client: Client, certs: dict[str, Certificate]) -> None:
    cert = certs["www"]
    url = reverse("admin:pki_core_certificate_change", args=[cert.pk])
    response = admin_client.get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields) == []  # nothing editable
    for text in ("serverAuth", "DNS:alt.example.net", "subjectAltName", "-----BEGIN CERTIFICATE-----",
                 "-----BEGIN CERTIFICATE REQUEST-----", cert.sha256_fingerprint,
                 reverse("admin:pki_core_certificate_revoke", args=[cert.pk]),
                 reverse("admin:pki_core_certificate_bundle", args=[cert.pk])):
        assert text in html, text
    assert 'name="_save"' not in html
    # A POST changes nothing either.
    before = Certificate.objects.values().get(pk=cert.pk)
    response = admin_client.post(url, {"cn": "evil.example.com", "revoked": "on", "profile": "client"})
    assert response.status_code == 403
    assert Certificate.objects.values().get(pk=cert.pk) == before


def test_ca_edit_changes_only_enabled_and_acme(admin_client: Client, intermediate: CertificateAuthority) -> None:
    url = reverse("admin:pki_core_certificateauthority_change", args=[intermediate.pk])
    response = admin_client.get(url)
    assert set(response.context["adminform"].form.fields) == {
        "enabled", "acme_enabled", "acme_requires_contact", "acme_profile", "acme_terms_of_service",
        "acme_website", "acme_caa_identities"}
    before: dict[str, Any] = dict(CertificateAuthority.objects.values().get(pk=intermediate.pk))
    response = admin_client.post(url, {
        "acme_requires_contact": "on", "acme_profile": "server", "acme_website": "https://pki.example.com/",
        "acme_terms_of_service": "", "acme_caa_identities": "pki.example.com", "_save": "Save",
        # Not editable: ignored.
        "name": "renamed", "serial": "01", "key_backend_options": '{"path": "/etc/passwd"}', "revoked": "on",
    })
    assert response.status_code == 302, response.content[:2000]
    after: dict[str, Any] = dict(CertificateAuthority.objects.values().get(pk=intermediate.pk))
    assert (after["enabled"], after["acme_enabled"], after["acme_requires_contact"]) == (False, False, True)
    assert (after["acme_profile"], after["acme_website"], after["acme_caa_identities"]) == (
        "server", "https://pki.example.com/", "pki.example.com")
    unchanged = {k: v for k, v in before.items() if not k.startswith("acme_") and k != "enabled"}
    assert {k: after[k] for k in unchanged} == unchanged


def test_ca_edit_rejects_unknown_profile(admin_client: Client, intermediate: CertificateAuthority) -> None:
    url = reverse("admin:pki_core_certificateauthority_change", args=[intermediate.pk])
    response = admin_client.post(url, {"enabled": "on", "acme_profile": "nonsense", "_save": "Save"})
    assert response.status_code == 200
    assert "nonsense is not one of the available choices" in response.content.decode()
    assert CertificateAuthority.objects.get(pk=intermediate.pk).acme_profile == "webserver"


def test_no_add_and_no_delete(admin_client: Client, certs: dict[str, Certificate],
                              intermediate: CertificateAuthority) -> None:
    for model, obj in (("certificate", certs["www"]), ("certificateauthority", intermediate)):
        assert admin_client.get(reverse(f"admin:pki_core_{model}_add")).status_code == 403
        assert admin_client.get(reverse(f"admin:pki_core_{model}_delete", args=[obj.pk])).status_code == 403
        assert admin_client.post(reverse(f"admin:pki_core_{model}_delete", args=[obj.pk]),
                                 {"post": "yes"}).status_code == 403
        response = admin_client.get(reverse(f"admin:pki_core_{model}_changelist"))
        choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
        assert "delete_selected" not in choices and "revoke_selected" in choices
    response = admin_client.post(CERT_LIST, {"action": "delete_selected", "_selected_action": [certs["www"].pk],
                                             "post": "yes"})
    assert Certificate.objects.filter(pk=certs["www"].pk).exists()
    assert CertificateAuthority.objects.filter(pk=intermediate.pk).exists()


# --- Revocation ------------------------------------------------------------------------------------


def test_revoke_action(admin_client: Client, certs: dict[str, Certificate],
                       revocations: list[tuple[Any, Any]]) -> None:
    chosen = [certs["www"], certs["client"]]
    selection = {"action": "revoke_selected", "_selected_action": [c.pk for c in chosen]}
    page = admin_client.post(CERT_LIST, selection)
    assert page.status_code == 200
    assert "reason" in page.context["form"].fields
    assert not Certificate.objects.filter(pk__in=pks(*chosen), revoked=True).exists()
    html = page.content.decode()
    assert all(c.serial in html for c in chosen)

    response = admin_client.post(CERT_LIST, {**selection, "apply": "yes", "reason": "key_compromise",
                                             "compromised": "2024-05-01T10:30"}, follow=True)
    assert response.status_code == 200
    for cert in chosen:
        cert.refresh_from_db()
        assert cert.revoked and cert.revoked_reason == "key_compromise"
        assert cert.compromised == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert {(sender, cert.pk) for sender, cert in revocations} == {(Certificate, c.pk) for c in chosen}
    assert "Revoked 2 (key_compromise)" in response.content.decode()
    assert not Certificate.objects.filter(pk=certs["soon"].pk, revoked=True).exists()


def test_revoke_action_reports_already_revoked(admin_client: Client, certs: dict[str, Certificate],
                                               revocations: list[tuple[Any, Any]]) -> None:
    gone, soon = certs["gone"], certs["soon"]
    response = admin_client.post(CERT_LIST, {
        "action": "revoke_selected", "_selected_action": [gone.pk, soon.pk], "apply": "yes",
        "reason": "affiliation_changed", "compromised": ""}, follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"{gone.serial}) was revoked already" in html
    gone.refresh_from_db()
    soon.refresh_from_db()
    assert gone.revoked_reason == "superseded"  # untouched
    assert soon.revoked_reason == "affiliation_changed"
    assert [cert.pk for _, cert in revocations] == [soon.pk]


def test_revoke_action_rejects_bad_input(admin_client: Client, certs: dict[str, Certificate]) -> None:
    cert = certs["www"]
    future = (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    for data, error in (({"reason": "remove_from_crl"}, "Select a valid choice"),
                        ({"reason": "key_compromise", "compromised": future}, "cannot be in the future"),
                        ({"reason": "key_compromise", "compromised": "yesterday"}, "Enter a valid date/time")):
        response = admin_client.post(CERT_LIST, {"action": "revoke_selected", "_selected_action": [cert.pk],
                                                 "apply": "yes", **data})
        assert response.status_code == 200
        assert error in response.content.decode()
        cert.refresh_from_db()
        assert not cert.revoked


def test_revoke_from_detail_page(admin_client: Client, certs: dict[str, Certificate],
                                 revocations: list[tuple[Any, Any]]) -> None:
    cert = certs["month"]
    url = reverse("admin:pki_core_certificate_revoke", args=[cert.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and cert.serial in page.content.decode()
    response = admin_client.post(url, {"reason": "cessation_of_operation"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:pki_core_certificate_change", args=[cert.pk])
    cert.refresh_from_db()
    assert cert.revoked and cert.revoked_reason == "cessation_of_operation" and cert.compromised is None
    assert [(sender, c.pk) for sender, c in revocations] == [(Certificate, cert.pk)]
    # Now revoked: the page has no revoke button and the revoke URL explains instead of failing.
    change = admin_client.get(reverse("admin:pki_core_certificate_change", args=[cert.pk])).content.decode()
    assert url not in change
    again = admin_client.post(url, {"reason": "superseded"}, follow=True)
    assert again.status_code == 200 and "was revoked already" in again.content.decode()
    cert.refresh_from_db()
    assert cert.revoked_reason == "cessation_of_operation"


def test_revoke_ca(admin_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                   revocations: list[tuple[Any, Any]]) -> None:
    response = admin_client.post(CA_LIST, {
        "action": "revoke_selected", "_selected_action": [root.pk, intermediate.pk], "apply": "yes",
        "reason": "ca_compromise"}, follow=True)
    html = response.content.decode()
    assert "a root CA cannot be revoked" in html
    root.refresh_from_db()
    intermediate.refresh_from_db()
    assert not root.revoked
    assert intermediate.revoked and intermediate.revoked_reason == "ca_compromise"
    assert [(sender, ca.pk) for sender, ca in revocations] == [(CertificateAuthority, intermediate.pk)]
    root_page = admin_client.get(reverse("admin:pki_core_certificateauthority_change", args=[root.pk]))
    assert reverse("admin:pki_core_certificateauthority_revoke", args=[root.pk]) not in root_page.content.decode()


def test_revoke_needs_change_permission(client: Client, certs: dict[str, Certificate]) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_certificate"))
    client.force_login(viewer)
    cert = certs["www"]
    assert client.get(reverse("admin:pki_core_certificate_change", args=[cert.pk])).status_code == 200
    assert client.get(reverse("admin:pki_core_certificate_pem", args=[cert.pk])).status_code == 200
    assert client.post(reverse("admin:pki_core_certificate_revoke", args=[cert.pk]),
                       {"reason": "unspecified"}).status_code == 403
    client.post(CERT_LIST, {"action": "revoke_selected", "_selected_action": [cert.pk], "apply": "yes",
                            "reason": "unspecified"})
    cert.refresh_from_db()
    assert not cert.revoked


# --- Downloads -------------------------------------------------------------------------------------


def test_download_certificate_pem_and_bundle(admin_client: Client, certs: dict[str, Certificate],
                                             root: CertificateAuthority,
                                             intermediate: CertificateAuthority) -> None:
    cert = certs["www"]
    response = admin_client.get(reverse("admin:pki_core_certificate_pem", args=[cert.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response["Content-Disposition"] == f'attachment; filename="wwwexamplecom-{cert.serial}.pem"'
    assert x509.load_pem_x509_certificate(response.content) == cert.pub

    response = admin_client.get(reverse("admin:pki_core_certificate_bundle", args=[cert.pk]))
    assert response["Content-Type"] == "application/x-pem-file"
    assert "bundle.pem" in response["Content-Disposition"]
    assert x509.load_pem_x509_certificates(response.content) == [cert.pub, intermediate.pub]


def test_download_ca_pem_and_bundle(admin_client: Client, root: CertificateAuthority,
                                    intermediate: CertificateAuthority) -> None:
    response = admin_client.get(reverse("admin:pki_core_certificateauthority_pem", args=[intermediate.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="intermediate.pem"'
    assert x509.load_pem_x509_certificates(response.content) == [intermediate.pub]
    response = admin_client.get(reverse("admin:pki_core_certificateauthority_bundle", args=[intermediate.pk]))
    assert x509.load_pem_x509_certificates(response.content) == [intermediate.pub, root.pub]
    missing = admin_client.get(reverse("admin:pki_core_certificateauthority_pem", args=[999999]))
    assert missing.status_code == 404


# --- Who gets in -----------------------------------------------------------------------------------


def admin_urls(cert: Certificate, ca: CertificateAuthority) -> list[str]:
    urls = [CERT_LIST, CA_LIST]
    for model, obj in (("certificate", cert), ("certificateauthority", ca)):
        urls += [reverse(f"admin:pki_core_{model}_{view}", args=[obj.pk])
                 for view in ("change", "history", "pem", "bundle", "revoke")]
    return urls


def test_anonymous_and_non_staff_are_sent_to_login(client: Client, certs: dict[str, Certificate],
                                                   intermediate: CertificateAuthority) -> None:
    urls = admin_urls(certs["www"], intermediate)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    User.objects.create_user("someone", password="pw")
    client.login(username="someone", password="pw")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    response = client.post(reverse("admin:pki_core_certificate_revoke", args=[certs["www"].pk]),
                           {"reason": "unspecified"})
    assert response.status_code == 302
    assert not Certificate.objects.get(pk=certs["www"].pk).revoked


def test_staff_without_permissions_gets_403(client: Client, certs: dict[str, Certificate],
                                            intermediate: CertificateAuthority) -> None:
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    for url in admin_urls(certs["www"], intermediate)[2:]:
        assert client.get(url).status_code == 403, url


# --- No private key material anywhere --------------------------------------------------------------


def test_no_private_key_anywhere(admin_client: Client, db_ca: CertificateAuthority,
                                 certs: dict[str, Certificate]) -> None:
    key_pem = db_ca.key_backend_options["private_key"]
    key_lines = [line for line in key_pem.splitlines() if line and "-----" not in line]
    # Make some history first: an edit and a revocation of the CA and of one of its certificates.
    change_url = reverse("admin:pki_core_certificateauthority_change", args=[db_ca.pk])
    admin_client.post(change_url, {"enabled": "on", "acme_enabled": "on", "acme_profile": "webserver",
                                   "_save": "Save"})
    cert = certs["dbcert"]
    admin_client.post(reverse("admin:pki_core_certificate_revoke", args=[cert.pk]), {"reason": "superseded"})
    db_ca.refresh_from_db()
    assert db_ca.acme_enabled and db_ca.key_backend_options["private_key"] == key_pem

    pages = [
        reverse("admin:index"), reverse("admin:app_list", args=["pki_core"]),
        CA_LIST, f"{CA_LIST}?q=PRIVATE", f"{CA_LIST}?q=db", CERT_LIST, f"{CERT_LIST}?ca__id__exact={db_ca.pk}",
        change_url, reverse("admin:pki_core_certificateauthority_history", args=[db_ca.pk]),
        reverse("admin:pki_core_certificateauthority_revoke", args=[db_ca.pk]),
        reverse("admin:pki_core_certificateauthority_pem", args=[db_ca.pk]),
        reverse("admin:pki_core_certificateauthority_bundle", args=[db_ca.pk]),
        reverse("admin:pki_core_certificate_change", args=[cert.pk]),
        reverse("admin:pki_core_certificate_history", args=[cert.pk]),
        reverse("admin:pki_core_certificate_pem", args=[cert.pk]),
        reverse("admin:pki_core_certificate_bundle", args=[cert.pk]),
    ]
    for url in pages:
        response = admin_client.get(url, follow=True)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert "PRIVATE KEY" not in body, url
        assert "key_backend_options" not in body and "private_key" not in body, url
        assert not any(line in body for line in key_lines), url
    assert listed(admin_client, CA_LIST, q="PRIVATE") == set()
    # The action page too.
    action_page = admin_client.post(CA_LIST, {"action": "revoke_selected", "_selected_action": [db_ca.pk]})
    assert action_page.status_code == 200 and b"PRIVATE KEY" not in action_page.content


@pytest.mark.parametrize("lookup", ["key_backend_options__private_key__contains",
                                    "key_backend_options__icontains", "key_backend_options"])
def test_lookups_on_key_options_are_refused(admin_client: Client, db_ca: CertificateAuthority,
                                            lookup: str) -> None:
    """Filtering on the key would reveal it one character at a time."""
    assert admin_client.get(CA_LIST, {lookup: "MI"}).status_code == 400
    assert admin_client.get(CERT_LIST, {f"ca__{lookup}": "MI"}).status_code == 400


# --- createsuperuser ----------------------------------------------------------------------------


def test_createsuperuser_can_log_in(db: None, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct horse battery staple")
    call_command("createsuperuser", interactive=False, username="operator", email="ops@example.com",
                 verbosity=0)
    user = User.objects.get(username="operator")
    assert user.is_superuser and user.is_staff and user.email == "ops@example.com"
    response = client.post("/admin/login/?next=/admin/", {"username": "operator",
                                                          "password": "correct horse battery staple"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get(CERT_LIST).status_code == 200
    client.logout()
    bad = client.post("/admin/login/", {"username": "operator", "password": "wrong"})
    assert bad.status_code == 200 and client.get(CERT_LIST).status_code == 302

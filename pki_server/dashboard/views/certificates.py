"""Certificates: the searchable list, a certificate's page with its decoded extensions, PEM, and revoking."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from pki_server.core import utils
from pki_server.core.admin_views import describe_extension_value, pem_response
from pki_server.core.exceptions import AlreadyRevoked, PkiError
from pki_server.core.models import Certificate
from pki_server.dashboard import search, stats
from pki_server.dashboard.forms import CertificateFilterForm, RevokeForm
from pki_server.dashboard.views.access import CHANGE_CERTIFICATE, VIEW_CERTIFICATE, staff_required

PAGE_SIZE = 50


@staff_required(VIEW_CERTIFICATE)
def certificate_list(request: HttpRequest) -> HttpResponse:
    cas = list(stats.ca_queryset().only("pk", "name"))
    form = CertificateFilterForm(request.GET, cas)
    form.is_valid()  # an invalid filter is shown as an error and left out; the valid ones apply
    queryset = search.apply_filters(stats.certificate_list_queryset(), form.cleaned_data).order_by("-created", "-pk")
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "dashboard/certificate_list.html", {
        "form": form, "page": page, "query": query.urlencode(),
    })


def _get_certificate(serial: str) -> Certificate:
    wanted = search.normalize_serial(serial)
    cert = Certificate.objects.select_related("ca").filter(serial=wanted).first() if wanted else None
    if cert is None:
        raise Http404("No certificate has this serial.")
    return cert


def extension_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)  # cryptography's name for the OIDs it knows
    return name if name and name != "Unknown OID" else oid.dotted_string


def decoded_extensions(certificate: x509.Certificate) -> list[dict[str, Any]]:
    """Each extension's name, criticality and value, one line per item (SANs, key usages, URLs ...)."""
    return [
        {"name": extension_name(extension.oid), "oid": extension.oid.dotted_string,
         "critical": extension.critical, "lines": describe_extension_value(extension.value)}
        for extension in certificate.extensions
    ]


def subject_alternative_names(certificate: x509.Certificate) -> list[str]:
    """The SANs, one string each ("DNS:www.example.com"); none if the certificate has no such extension."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return describe_extension_value(extension.value)


def _detail(request: HttpRequest, cert: Certificate, form: RevokeForm | None = None, status: int = 200) -> HttpResponse:
    order = getattr(cert, "acme_order", None)
    return render(request, "dashboard/certificate_detail.html", {
        "cert": cert,
        "sans": subject_alternative_names(cert.pub),
        "extensions": decoded_extensions(cert.pub),
        "key_type": utils.describe_key(cert.pub.public_key()),
        "issuer": cert.pub.issuer.rfc4514_string(),
        "order": order,
        "can_revoke": not cert.revoked and request.user.has_perm(CHANGE_CERTIFICATE),
        "revoke_form": form or RevokeForm(),
    }, status=status)


@staff_required(VIEW_CERTIFICATE)
def certificate_detail(request: HttpRequest, serial: str) -> HttpResponse:
    cert = (
        Certificate.objects.select_related("ca", "acme_order__account").defer("ca__key_backend_options", "ca__der")
        .filter(serial=search.normalize_serial(serial) or "").first()
    )
    if cert is None:
        raise Http404("No certificate has this serial.")
    return _detail(request, cert)


@staff_required(VIEW_CERTIFICATE)
def certificate_pem(request: HttpRequest, serial: str, bundle: bool = False) -> HttpResponse:
    """The certificate (or it and its chain below the root) as PEM: the admin's download."""
    return pem_response(_get_certificate(serial), bundle=bundle)


@require_POST
@staff_required(VIEW_CERTIFICATE, CHANGE_CERTIFICATE)
def certificate_revoke(request: HttpRequest, serial: str) -> HttpResponse:
    """Revoke through ``cert.revoke()``, the path of every other door (signals, CRL, OCSP follow)."""
    cert = _get_certificate(serial)
    form = RevokeForm(request.POST)
    if not form.is_valid():
        return _detail(request, cert, form, status=400)
    reason, compromised = form.cleaned_data["reason"], form.cleaned_data["compromised"]
    detail_url = reverse("dashboard:certificate", args=[cert.serial])
    try:
        cert.revoke(reason=reason, compromised=compromised)
    except AlreadyRevoked:
        messages.warning(request, f"{cert} (serial {cert.serial}) was revoked already; nothing changed.")
        return HttpResponseRedirect(detail_url)
    except (PkiError, ValueError) as ex:
        messages.error(request, f"{cert} was not revoked: {ex}")
        return HttpResponseRedirect(detail_url)
    messages.success(request, f"Revoked {cert} (serial {cert.serial}), reason: {reason.replace('_', ' ')}.")
    return HttpResponseRedirect(detail_url)

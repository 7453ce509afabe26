"""Pages of the admin beyond Django's own: the revoke form, PEM downloads, decoded extensions.

admin.py wires these into :class:`CertificateAuthorityAdmin` and :class:`CertificateAdmin`. Nothing
here reads ``key_backend_options``: the admin shows certificates, never where or what a key is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django import forms
from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

from pki_server.core import extensions as ext
from pki_server.core.exceptions import AlreadyRevoked, PkiError
from pki_server.core.models import REVOCATION_REASONS, Certificate, CertificateAuthority

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

PEM_CONTENT_TYPE = "application/x-pem-file"
REVOKE_TEMPLATE = "admin/pki_core/revoke.html"


class RevokeForm(forms.Form):
    """Why a certificate is revoked (RFC 5280 §5.3.1) and, optionally, since when its key is unsafe."""

    reason = forms.ChoiceField(
        choices=[(name, name.replace("_", " ")) for name, _ in REVOCATION_REASONS],
        initial="unspecified",
        help_text="The CRLReason of RFC 5280 §5.3.1.",
    )
    compromised = forms.DateTimeField(
        label="Key compromised since",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"),
        help_text="Optional, in UTC: when the key is known or suspected to have been compromised "
                  "(the CRL's invalidity date, RFC 5280 §5.3.2).",
    )

    def clean_compromised(self) -> datetime | None:
        value: datetime | None = self.cleaned_data.get("compromised")
        if value is not None and value > timezone.now():
            raise ValidationError("The compromise date cannot be in the future.")
        return value


def revoke(
    model_admin: ModelAdmin[Any], request: HttpRequest, objects: Iterable[Certificate | CertificateAuthority],
    form: RevokeForm,
) -> int:
    """Revoke each object through its own ``revoke()`` (so the signals fire); report every outcome."""
    reason, compromised = form.cleaned_data["reason"], form.cleaned_data["compromised"]
    done: list[str] = []
    for obj in objects:
        if isinstance(obj, CertificateAuthority) and obj.is_root:
            model_admin.message_user(request, f"{obj}: a root CA cannot be revoked (no CRL can list "
                                     "it); disable it or remove it from trust stores instead.", messages.ERROR)
            continue
        try:
            obj.revoke(reason=reason, compromised=compromised)
        except AlreadyRevoked:
            model_admin.message_user(request, f"{obj} (serial {obj.serial}) was revoked already.",
                                     messages.WARNING)
            continue
        except (PkiError, ValueError) as ex:
            model_admin.message_user(request, f"{obj}: {ex}", messages.ERROR)
            continue
        model_admin.log_change(request, obj, f"Revoked ({reason}).")
        done.append(f"{obj} ({obj.serial})")
    if done:
        model_admin.message_user(request, f"Revoked {len(done)} ({reason}): {', '.join(done)}.",
                                 messages.SUCCESS)
    return len(done)


def render_revoke_page(
    model_admin: ModelAdmin[Any], request: HttpRequest, objects: list[Any], form: RevokeForm, *,
    action: str | None = None, cancel_url: str,
) -> TemplateResponse:
    """The intermediate page: what will be revoked, and the reason form."""
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Revoke {opts.verbose_name if len(objects) == 1 else opts.verbose_name_plural}",
        "subtitle": None,
        "opts": opts,
        "objects": objects,
        "form": form,
        "action": action,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME) if action else [],
        "select_across": request.POST.get("select_across", "0") if action else "0",
        "cancel_url": cancel_url,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, REVOKE_TEMPLATE, context)


def _pem(certificates: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def pem_response(obj: Certificate | CertificateAuthority, *, bundle: bool) -> HttpResponse:
    """The certificate (or it and its chain) as a PEM attachment."""
    if isinstance(obj, CertificateAuthority):
        chain = [ca.pub for ca in obj.bundle()] if bundle else [obj.pub]
        stem = slugify(obj.name) or obj.serial
    else:
        chain = obj.bundle() if bundle else [obj.pub]
        stem = slugify(obj.cn)[:64] or "certificate"
        stem = f"{stem}-{obj.serial}"
    filename = f"{stem}-bundle.pem" if bundle else f"{stem}.pem"
    response = HttpResponse(_pem(chain), content_type=PEM_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


# Decoded extensions ---------------------------------------------------------------------------


def _hex(value: bytes | None) -> str:
    return value.hex(":").upper() if value else ""


def _names(names: Iterable[x509.GeneralName] | None) -> list[str]:
    return [ext.format_general_name(name) for name in names or ()]


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if name and name != "Unknown OID" else oid.dotted_string


def _key_usage(value: x509.KeyUsage) -> list[str]:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    used = [name for name in names if getattr(value, name)]
    if value.key_agreement:  # encipher_only / decipher_only are defined only with key_agreement
        used += [name for name in ("encipher_only", "decipher_only") if getattr(value, name)]
    return used


def describe_extension_value(value: x509.ExtensionType) -> list[str]:
    """One line per item of an extension's value, the way a person reads it."""
    if isinstance(value, x509.BasicConstraints):
        if not value.ca:
            return ["CA: no"]
        limit = "unlimited" if value.path_length is None else str(value.path_length)
        return [f"CA: yes, path length: {limit}"]
    if isinstance(value, x509.KeyUsage):
        return _key_usage(value)
    if isinstance(value, x509.ExtendedKeyUsage):
        return [_oid_name(oid) for oid in value]
    if isinstance(value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        return _names(value)
    if isinstance(value, x509.SubjectKeyIdentifier):
        return [_hex(value.digest)]
    if isinstance(value, x509.AuthorityKeyIdentifier):
        lines = [f"key id: {_hex(value.key_identifier)}"] if value.key_identifier else []
        lines += [f"issuer: {name}" for name in _names(value.authority_cert_issuer)]
        if value.authority_cert_serial_number is not None:
            lines.append(f"serial: {value.authority_cert_serial_number:X}")
        return lines
    if isinstance(value, x509.AuthorityInformationAccess):
        return [f"{_oid_name(d.access_method)}: {ext.format_general_name(d.access_location)}" for d in value]
    if isinstance(value, x509.CRLDistributionPoints):
        return [name for point in value for name in _names(point.full_name)]
    if isinstance(value, x509.NameConstraints):
        return ([f"permitted: {name}" for name in _names(value.permitted_subtrees)]
                + [f"excluded: {name}" for name in _names(value.excluded_subtrees)])
    if isinstance(value, x509.CertificatePolicies):
        return [_oid_name(policy.policy_identifier) for policy in value]
    if isinstance(value, x509.OCSPNoCheck):
        return ["yes"]
    return [repr(value)]


_LINE_BREAK = mark_safe("<br>")


def extensions_table(certificate: x509.Certificate) -> SafeString:
    """The certificate's extensions as an HTML table (every value escaped)."""
    rows = format_html_join(
        "\n", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                _oid_name(extension.oid),
                "yes" if extension.critical else "no",
                format_html_join(_LINE_BREAK, "{}", ((line,) for line in describe_extension_value(extension.value))),
            )
            for extension in certificate.extensions
        ),
    )
    return format_html(
        '<table class="pki-extensions"><thead><tr><th>Extension</th><th>Critical</th><th>Value</th></tr>'
        "</thead><tbody>{}</tbody></table>", rows,
    )


def pre(text: str) -> SafeString:
    # No style attribute: the admin's Content-Security-Policy (style-src 'self') would refuse it.
    return format_html("<pre>{}</pre>", text)


def status_for_queryset_filter(value: str | None, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """Rows whose ``status`` property is ``value`` (valid, revoked, expired), as one query."""
    now = timezone.now()
    if value == "valid":
        return queryset.filter(revoked=False, not_before__lte=now, not_after__gt=now)
    if value == "revoked":
        return queryset.filter(revoked=True)
    if value == "expired":
        return queryset.filter(revoked=False, not_after__lte=now)
    return queryset

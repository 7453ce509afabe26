"""The Django admin for certificate authorities and certificates (docs/admin.md).

Staff can find, inspect, download and revoke; nothing is added or deleted here (issuing goes
through the API, the CLI or ACME, and rows are kept as the audit trail). On a CA only ``enabled``
and the ACME settings can be changed. ``key_backend_options`` may hold a private key: it is in no
form, column, read-only field or filter, and lookups on it are refused.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from pki_server.core import admin_views as views
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.profiles import PROFILES

_SERIAL_TERM = re.compile(r"[0-9A-Fa-f]{2}(?::?[0-9A-Fa-f]{2})*|[0-9A-Fa-f]+")
_KEY_FIELD = "key_backend_options"  # where a key backend keeps its key, or says where it is


class StatusFilter(admin.SimpleListFilter):
    """valid / revoked / expired, the same words as the ``status`` column (revoked wins over expired)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("valid", "Valid"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return views.status_for_queryset_filter(self.value(), queryset)


class ExpiryFilter(admin.SimpleListFilter):
    """By ``not_after``: expired already, or expiring within 7, 30 or 90 days (revoked or not)."""

    title = "expiry"
    parameter_name = "expires"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("expired", "Expired"), ("7", "Within 7 days"), ("30", "Within 30 days"),
                ("90", "Within 90 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value, now = self.value(), timezone.now()
        if value == "expired":
            return queryset.filter(not_after__lte=now)
        if value in {"7", "30", "90"}:
            return queryset.filter(not_after__gt=now, not_after__lte=now + timedelta(days=int(value)))
        return queryset


class X509Admin(admin.ModelAdmin):  # type: ignore[type-arg]
    """What both pages share: serial search, downloads, revocation, and no add or delete."""

    list_per_page = 50
    show_full_result_count = False

    # --- No add, no delete: revocation ends a certificate; rows are the audit trail. ---
    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # Filtering on the key options (?key_backend_options__contains=...) would be an oracle for the key.
        if _KEY_FIELD in lookup.split("__"):
            return False
        return super().lookup_allowed(lookup, value, request)

    # --- Search: a serial as openssl prints it (lower case, colons, leading zeros) finds the row. ---
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if _SERIAL_TERM.fullmatch(term):
            serial = term.replace(":", "").upper().lstrip("0") or "0"
            results = results | queryset.filter(Q(serial__contains=serial))
        return results, may_have_duplicates

    # --- Extra URLs: downloads and the revoke page. ---
    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/pem/", wrap(self.pem_view), {"bundle": False}, name=f"{prefix}_pem"),
            path("<path:object_id>/bundle/", wrap(self.pem_view), {"bundle": True}, name=f"{prefix}_bundle"),
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=f"{prefix}_revoke"),
            *super().get_urls(),
        ]

    def _url(self, obj: Any, name: str) -> str:
        opts = self.model._meta
        return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}", args=[obj.pk])

    def _get_viewable(self, request: HttpRequest, object_id: str) -> Any:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} with ID {object_id!r}.")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def pem_view(self, request: HttpRequest, object_id: str, bundle: bool) -> HttpResponse:
        return views.pem_response(self._get_viewable(request, object_id), bundle=bundle)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._get_viewable(request, object_id)
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        change_url = self._url(obj, "change")
        if obj.revoked:
            self.message_user(request, f"{obj} (serial {obj.serial}) was revoked already.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        form = views.RevokeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            views.revoke(self, request, [obj], form)
            return HttpResponseRedirect(change_url)
        return views.render_revoke_page(self, request, [obj], form, cancel_url=change_url)

    @admin.action(description="Revoke selected %(verbose_name_plural)s", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        form = views.RevokeForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            views.revoke(self, request, queryset, form)
            return None  # back to the list
        return views.render_revoke_page(self, request, list(queryset), form, action="revoke_selected",
                                        cancel_url=request.get_full_path())

    actions = ["revoke_selected"]

    # --- Columns and read-only fields. ---
    @admin.display(description="status")
    def status_display(self, obj: Any) -> str:
        return str(obj.status)

    @admin.display(description="download")
    def downloads(self, obj: Any) -> SafeString:
        return format_html('<a href="{}">PEM</a> · <a href="{}">bundle</a>',
                           self._url(obj, "pem"), self._url(obj, "bundle"))

    @admin.display(description="SHA-256 fingerprint")
    def fingerprint(self, obj: Any) -> str:
        return str(obj.sha256_fingerprint)

    @admin.display(description="extensions")
    def extensions_display(self, obj: Any) -> SafeString:
        return views.extensions_table(obj.pub)

    @admin.display(description="PEM")
    def pem_display(self, obj: Any) -> SafeString:
        return views.pre(obj.pem)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        extra = dict(extra_context or {})
        if obj is not None:
            extra.update(pem_url=self._url(obj, "pem"), bundle_url=self._url(obj, "bundle"),
                         revoke_url=self._url(obj, "revoke"), can_revoke=self._can_revoke(request, obj))
        return super().change_view(request, object_id, form_url, extra)

    def _can_revoke(self, request: HttpRequest, obj: Any) -> bool:
        return not obj.revoked and self.has_revoke_permission(request)



_REVOCATION_FIELDS = ("revoked", "revoked_date", "revoked_reason", "compromised")
@admin.register(Certificate)
class CertificateAdmin(X509Admin):
    list_display = ("name_display", "serial", "ca", "status_display", "not_after", "profile", "downloads")
    list_select_related = ("ca",)
    list_filter = ("ca", StatusFilter, ExpiryFilter, "profile")
    search_fields = ("cn", "sans", "serial")
    _main_fields = ("cn", "subject", "sans", "serial", "ca", "profile", "status_display", "not_before",
                    "not_after", "fingerprint", "created", "downloads")
    fieldsets = (
        (None, {"fields": _main_fields}),
        ("Revocation", {"fields": _REVOCATION_FIELDS}),
        ("Extensions", {"fields": ("extensions_display",)}),
        ("PEM", {"fields": ("pem_display", "csr_display"), "classes": ("collapse",)}),
    )
    readonly_fields = (*_main_fields, *_REVOCATION_FIELDS, "extensions_display", "pem_display", "csr_display")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a certificate is read-only: the detail page is a view page with a revoke button

    @admin.display(description="name", ordering="cn")
    def name_display(self, obj: Certificate) -> str:
        return str(obj)

    @admin.display(description="CSR")
    def csr_display(self, obj: Certificate) -> SafeString:
        return views.pre(obj.csr) if obj.csr else format_html("{}", "-")


class CertificateAuthorityForm(forms.ModelForm):  # type: ignore[type-arg]
    """The only things staff may change on a CA: whether it signs, and its ACME settings."""

    acme_profile = forms.ChoiceField(
        label="ACME profile", choices=[(name, f"{name}: {p.description}") for name, p in PROFILES.items()],
        help_text="The profile of certificates issued through ACME.",
    )
    acme_terms_of_service = forms.URLField(label="ACME terms of service", required=False, assume_scheme="https")
    acme_website = forms.URLField(label="ACME website", required=False, assume_scheme="https")

    class Meta:
        model = CertificateAuthority
        fields = ("enabled", "acme_enabled", "acme_requires_contact", "acme_profile",
                  "acme_terms_of_service", "acme_website", "acme_caa_identities")


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(X509Admin):
    form = CertificateAuthorityForm
    # URLs typed without a scheme are https:// (Django 6's default; silences its deprecation warning).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "cn", "serial", "parent", "status_display", "not_after", "enabled",
                    "acme_enabled", "downloads")
    list_select_related = ("parent",)
    list_filter = (StatusFilter, ExpiryFilter, "enabled", "acme_enabled")
    search_fields = ("name", "cn", "serial")
    # Never add "key_backend_options" here: it can hold the private key (tests/core/test_admin.py).
    _main_fields = ("name", "cn", "subject", "serial", "parent", "path_length", "key_type", "key_backend_alias",
                    "status_display", "not_before", "not_after", "fingerprint", "created", "downloads")
    fieldsets = (
        (None, {"fields": (*_main_fields, "enabled")}),
        ("ACME", {"fields": ("acme_enabled", "acme_requires_contact", "acme_profile",
                             "acme_terms_of_service", "acme_website", "acme_caa_identities")}),
        ("Revocation", {"fields": _REVOCATION_FIELDS}),
        ("Extensions", {"fields": ("extensions_display",)}),
        ("PEM", {"fields": ("pem_display",), "classes": ("collapse",)}),
    )
    readonly_fields = (*_main_fields, *_REVOCATION_FIELDS, "extensions_display", "pem_display")

    @admin.display(description="key type")
    def key_type(self, obj: CertificateAuthority) -> str:
        return obj.key_type

    def _can_revoke(self, request: HttpRequest, obj: Any) -> bool:
        return super()._can_revoke(request, obj) and not obj.is_root

    def save_model(self, request: HttpRequest, obj: CertificateAuthority, form: Any, change: bool) -> None:
        # Write only the columns the form may change, so a concurrent revocation is never overwritten.
        fields = [name for name in form.changed_data if name in CertificateAuthorityForm.Meta.fields]
        if fields:
            obj.save(update_fields=fields)

"""The dashboard's forms: certificate search and filters, and the operator's confirmations.

The revoke form is the admin's (core.admin_views.RevokeForm): one list of reasons, one check of
the compromise date, whichever door revokes.
"""

from __future__ import annotations

from collections.abc import Iterable

from django import forms

from pki_server.core.admin_views import RevokeForm
from pki_server.core.models import CertificateAuthority

__all__ = ["CertificateFilterForm", "DeactivateAccountForm", "RevokeForm"]

STATUS_CHOICES = [("", "any status"), ("valid", "valid"), ("revoked", "revoked"), ("expired", "expired")]
EXPIRING_CHOICES = [("", "any expiry"), ("7", "within 7 days"), ("30", "within 30 days"), ("90", "within 90 days")]


class CertificateFilterForm(forms.Form):
    """GET parameters of the certificate list. Invalid values are reported and that filter not applied."""

    q = forms.CharField(label="Search", required=False, max_length=255,
                        help_text="Common name, a subject alternative name, or the serial (colons and case do "
                                  "not matter).")
    ca = forms.TypedChoiceField(label="CA", required=False, coerce=int, empty_value=None)
    status = forms.ChoiceField(required=False, choices=STATUS_CHOICES)
    expiring = forms.TypedChoiceField(label="Expiring", required=False, choices=EXPIRING_CHOICES, coerce=int,
                                      empty_value=None)

    def __init__(self, data: object, cas: Iterable[CertificateAuthority]) -> None:
        super().__init__(data)  # type: ignore[arg-type]
        ca_field = self.fields["ca"]
        assert isinstance(ca_field, forms.TypedChoiceField)
        ca_field.choices = [("", "all CAs"), *((str(ca.pk), ca.name) for ca in cas)]


class DeactivateAccountForm(forms.Form):
    """Deactivating an ACME account cannot be undone (RFC 8555 §7.3.6): the operator ticks to confirm."""

    confirm = forms.BooleanField(label="Yes, deactivate this account; this cannot be undone.", required=True)

"""Certificate profiles: the extensions and lifetime an end-entity certificate gets by purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.conf import settings

_KU_FIELDS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    key_usage: frozenset[str]
    extended_key_usage: tuple[x509.ObjectIdentifier, ...]
    ocsp_no_check: bool = False
    expires: timedelta | None = None  # None: PKI_DEFAULT_EXPIRES
    extra: tuple[x509.ExtensionType, ...] = field(default=())

    @property
    def default_expires(self) -> timedelta:
        return self.expires if self.expires is not None else settings.PKI_DEFAULT_EXPIRES

    def key_usage_for(self, public_key: object) -> x509.KeyUsage:
        """KeyUsage for a subject key: encipherment bits only for RSA keys (RFC 8813, RFC 8410)."""
        usages = set(self.key_usage)
        if not isinstance(public_key, rsa.RSAPublicKey):
            usages -= {"key_encipherment", "data_encipherment"}
            usages.add("digital_signature")
        values = {name: name in usages for name in _KU_FIELDS}
        return x509.KeyUsage(**values)

    def extensions(self, public_key: object) -> list[x509.Extension[x509.ExtensionType]]:
        extensions: list[x509.Extension[x509.ExtensionType]] = [
            x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)),
            x509.Extension(x509.KeyUsage.oid, True, self.key_usage_for(public_key)),
        ]
        if self.extended_key_usage:
            eku = x509.ExtendedKeyUsage(list(self.extended_key_usage))
            extensions.append(x509.Extension(x509.ExtendedKeyUsage.oid, False, eku))
        if self.ocsp_no_check:
            extensions.append(x509.Extension(x509.OCSPNoCheck.oid, False, x509.OCSPNoCheck()))
        extensions.extend(x509.Extension(ext.oid, False, ext) for ext in self.extra)
        return extensions


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            "webserver", "A TLS server (the default).",
            frozenset({"digital_signature", "key_encipherment"}),
            (ExtendedKeyUsageOID.SERVER_AUTH,),
        ),
        Profile(
            "server", "A TLS server that also authenticates as a client to other servers.",
            frozenset({"digital_signature", "key_encipherment"}),
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        ),
        Profile(
            "client", "A TLS client.",
            frozenset({"digital_signature"}),
            (ExtendedKeyUsageOID.CLIENT_AUTH,),
        ),
        Profile(
            "enduser", "A person: TLS client, e-mail protection and code signing.",
            frozenset({"digital_signature", "key_encipherment", "data_encipherment"}),
            (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION,
             ExtendedKeyUsageOID.CODE_SIGNING),
        ),
        Profile(
            "ocsp", "A delegated OCSP responder.",
            frozenset({"digital_signature"}),
            (ExtendedKeyUsageOID.OCSP_SIGNING,),
            ocsp_no_check=True,
            expires=timedelta(days=3),
        ),
    )
}


def get_profile(profile: str | Profile | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    name = profile or settings.PKI_DEFAULT_PROFILE
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a profile; use one of {', '.join(PROFILES)}.") from None

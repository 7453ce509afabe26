"""Signals of the CA core, sent on every path (Python API, CLI, admin, ACME).

Every signal's ``sender`` is the model class concerned. Receivers of the ``pre_*`` signals may
raise an exception to stop the operation; nothing is written then.

``pre_create_ca(sender=CertificateAuthority, name, subject, parent, key_backend, key_type, not_after, extensions)``
    before a CA's key is created. ``extensions`` is the list of :class:`x509.Extension` it will get.
``post_create_ca(sender=CertificateAuthority, ca)``
    after the CA is saved.
``pre_sign_cert(sender=Certificate, ca, csr, subject, profile, not_before, not_after, extensions)``
    before ``ca`` signs an end-entity certificate; ``profile`` is the :class:`Profile` object.
``post_issue_cert(sender=Certificate, cert)``
    after the certificate is saved.
``pre_revoke_cert(sender=Certificate or CertificateAuthority, cert, reason, compromised)``
    before a certificate (or an intermediate CA) is revoked; ``reason`` is an :class:`x509.ReasonFlags`.
``post_revoke_cert(sender=Certificate or CertificateAuthority, cert)``
    after the revocation is saved.
"""

from django.dispatch import Signal

pre_create_ca = Signal()
post_create_ca = Signal()
pre_sign_cert = Signal()
post_issue_cert = Signal()
pre_revoke_cert = Signal()
post_revoke_cert = Signal()

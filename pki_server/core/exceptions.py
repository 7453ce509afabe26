"""Errors of the CA core. Each message is meant to be shown to a person as it is."""


class PkiError(Exception):
    """Base class of every error the CA core raises on purpose."""


class KeyBackendError(PkiError):
    """A private key could not be created, stored or loaded."""


class PasswordError(KeyBackendError):
    """A private key needs a password that was not given, or the given one is wrong."""


class CertificateAuthorityDisabled(PkiError):
    """The certificate authority is disabled and signs nothing."""


class SigningPolicyError(PkiError):
    """The request breaks a rule of the CA: key, names, validity or path length."""


class AlreadyRevoked(PkiError):
    """The certificate is revoked already."""

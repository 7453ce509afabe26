"""pki-server: a certificate authority for internal PKI that speaks ACME."""

__version__ = "0.1.0"

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "pki_server.core"
    label = "pki_core"
    verbose_name = "Certificate authority"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pki_server.core import crl

        # A CA's first CRL is signed when it is created, and re-signed on every revocation. OCSP
        # responders are made by the worker's periodic refresh (ocsp_responder.refresh_ocsp_responders),
        # so that creating a CA issues no certificate besides its own.
        crl.connect_receivers()

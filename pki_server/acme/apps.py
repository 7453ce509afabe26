from django.apps import AppConfig


class AcmeConfig(AppConfig):
    name = "pki_server.acme"
    label = "pki_acme"
    verbose_name = "ACME"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The CA cache clears itself on CA changes made in this process.
        from pki_server.acme import cas  # noqa: F401

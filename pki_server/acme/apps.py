from django.apps import AppConfig


class AcmeConfig(AppConfig):
    name = "pki_server.acme"
    label = "pki_acme"
    verbose_name = "ACME"
    default_auto_field = "django.db.models.BigAutoField"

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "pki_server.core"
    label = "pki_core"
    verbose_name = "Certificate authority"
    default_auto_field = "django.db.models.BigAutoField"

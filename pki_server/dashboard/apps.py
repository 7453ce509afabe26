from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "pki_server.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        # The live feed listens to the core's and ACME's signals.
        from pki_server.dashboard import events  # noqa: F401

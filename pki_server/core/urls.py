from django.urls import path

from pki_server.core import views

app_name = "pki_core"

urlpatterns = [
    path("issuers/<str:serial>.der", views.issuer_certificate, name="issuer"),
]

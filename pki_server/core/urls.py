from django.urls import path

from pki_server.core import views

app_name = "pki_core"

urlpatterns = [
    path("issuers/<str:serial>.der", views.issuer_certificate, name="issuer"),
    path("crl/<str:serial>.crl", views.crl, name="crl"),
    path("crl/<str:serial>.pem", views.crl, {"encoding": "pem"}, name="crl-pem"),
    path("ocsp/<str:serial>/", views.ocsp, name="ocsp"),
    path("ocsp/<str:serial>/<path:encoded>", views.ocsp, name="ocsp-get"),
]

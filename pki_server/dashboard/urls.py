"""The dashboard's pages, under /dashboard/ (the live feed's websocket is routed in asgi.py)."""

from django.urls import path

from pki_server.dashboard.views import accounts, auth, cas, certificates, overview

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("cas/<str:serial>/", cas.ca_detail, name="ca"),
    path("cas/<str:serial>/bundle.pem", cas.ca_bundle, name="ca-bundle"),
    path("certificates/", certificates.certificate_list, name="certificates"),
    path("certificates/<str:serial>/", certificates.certificate_detail, name="certificate"),
    path("certificates/<str:serial>/certificate.pem", certificates.certificate_pem, name="certificate-pem"),
    path("certificates/<str:serial>/bundle.pem", certificates.certificate_pem, {"bundle": True},
         name="certificate-bundle"),
    path("certificates/<str:serial>/revoke/", certificates.certificate_revoke, name="certificate-revoke"),
    path("accounts/", accounts.account_list, name="accounts"),
    path("accounts/<str:slug>/", accounts.account_detail, name="account"),
    path("accounts/<str:slug>/deactivate/", accounts.account_deactivate, name="account-deactivate"),
]

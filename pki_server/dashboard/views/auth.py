"""Signing in and out: Django's own views, with the admin's rule that only active staff may sign in."""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views


class LoginView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    authentication_form = AdminAuthenticationForm  # refuses users who are not active staff
    redirect_authenticated_user = False  # a signed-in user without staff rights would loop


class LogoutView(auth_views.LogoutView):
    """POST only (Django 5), with the CSRF token of the base template's logout button."""

    next_page = "dashboard:login"

from __future__ import annotations

from django.urls import path

from bench.djangosite import views

urlpatterns = [path("page", views.page), path("hello", views.hello)]

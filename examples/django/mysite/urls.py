"""The project's views, kept next to their URLs to stay small."""

from __future__ import annotations

import os

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "hello": "from Django",
            "worker_pid": os.getpid(),
            "script_name": request.META["SCRIPT_NAME"],
        }
    )


def item(request: HttpRequest, number: int) -> JsonResponse:
    return JsonResponse({"item": number, "path": request.path})


urlpatterns = [
    path("", index),
    path("items/<int:number>/", item),
    path("admin/", admin.site.urls),
]

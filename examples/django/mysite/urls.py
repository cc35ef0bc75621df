"""The project's views, kept next to their URLs to stay small."""

from __future__ import annotations

import os

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


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


@csrf_exempt
@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    """A multipart form with a file: what Django parsed from it."""
    files = {name: {"name": f.name, "size": f.size} for name, f in request.FILES.items()}
    return JsonResponse({"fields": request.POST.dict(), "files": files})


urlpatterns = [
    path("", index),
    path("items/<int:number>/", item),
    path("upload/", upload),
    path("admin/", admin.site.urls),
]

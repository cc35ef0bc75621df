"""Views of the minimal Django site."""

from __future__ import annotations

import logging
import os
import time

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"pid": os.getpid(), "script_name": request.META["SCRIPT_NAME"], "path": request.path}
    )


@csrf_exempt
def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type="application/octet-stream")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(3)), content_type="text/plain")


def log(request: HttpRequest) -> HttpResponse:
    logging.getLogger("django.views").warning("%s", request.GET["text"])
    return HttpResponse("logged")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("django view failed")


def hang(request: HttpRequest) -> HttpResponse:
    time.sleep(float(request.GET.get("s", "60")))
    return HttpResponse("woke up")


urlpatterns = [
    path("", index),
    path("echo", echo),
    path("stream", stream),
    path("boom", boom),
    path("log", log),
    path("hang", hang),
]

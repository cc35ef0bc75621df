"""``GET /page``: the ORM twin of the Flask query, rendered by the shared template."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from bench.djangosite.models import Item
from bench.sitedata import SHOWN


def page(request: HttpRequest) -> HttpResponse:
    items = Item.objects.filter(stock__gt=0).order_by("name")[:SHOWN]
    return render(request, "items.html", {"title": "Items", "items": list(items)})


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"Hello, world!", content_type="text/plain")

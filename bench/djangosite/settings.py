"""Production-like settings: DEBUG off, the usual stateless middleware, SQLite from BENCH_DB."""

from __future__ import annotations

from bench.sitedata import TEMPLATES as TEMPLATE_DIR
from bench.sitedata import database

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.djangosite.urls"
WSGI_APPLICATION = "bench.djangosite.wsgi.application"
INSTALLED_APPS = ["bench.djangosite"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [TEMPLATE_DIR],
        "APP_DIRS": False,
        "OPTIONS": {},
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database()}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

"""``bench.djangosite.wsgi:application``, what every contender serves for ``django``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.djangosite.settings")
application = get_wsgi_application()

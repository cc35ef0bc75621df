"""One WSGI app made of the two real ones the matrix serves: the Django example project
at ``/`` and the tests' Flask app at ``/flask`` (so each host needs one pool)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from werkzeug.middleware.dispatcher import DispatcherMiddleware

DJANGO_PROJECT = Path(__file__).parent.parent / "examples" / "django"
sys.path.insert(0, str(DJANGO_PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from mysite.wsgi import application as django_app  # noqa: E402

from flask_app import app as flask_app  # noqa: E402

application = DispatcherMiddleware(django_app, {"/flask": flask_app.wsgi_app})

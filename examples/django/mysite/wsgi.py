"""The WSGI entry point of the project. From the repository root:

    pip install ".[serve]" django whitenoise
    python examples/django/manage.py migrate
    python examples/django/manage.py collectstatic --noinput
    python examples/django/manage.py createsuperuser
    wsgipool serve --chdir examples/django mysite.wsgi:application --workers 2

then open http://127.0.0.1:8000/, http://127.0.0.1:8000/items/7/ or the admin at
http://127.0.0.1:8000/admin/.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()

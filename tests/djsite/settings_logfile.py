"""The test site with Django's request errors logged to the file ``DJSITE_LOG`` names."""

import os

from djsite.settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"file": {"class": "logging.FileHandler", "filename": os.environ["DJSITE_LOG"]}},
    "loggers": {"django.request": {"handlers": ["file"], "level": "ERROR"}},
}

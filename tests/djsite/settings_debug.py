"""The test site with DEBUG on: Django's default logging then prints to the console."""

from djsite.settings import *  # noqa: F403

DEBUG = True

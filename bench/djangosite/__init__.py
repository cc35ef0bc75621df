"""The ``django`` workload: a one-app Django project (settings, a model, a view, a URL)."""

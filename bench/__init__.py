"""Benchmark of wsgipool against in-process adapters and gunicorn (see ``run.py``)."""

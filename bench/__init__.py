"""Benchmark of wsgipool against its peers: throughput and front cost (``run.py``), memory
(``memory.py``), worker replacement (``replace.py``) and slow clients (``slow.py``)."""

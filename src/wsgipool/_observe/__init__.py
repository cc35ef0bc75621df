"""Observability: the health probes, the status page and the Prometheus metrics, read
from the pool's stats and the front's counts."""

"""``python -m wsgipool._worker FRONT_PID``: how the pool starts a worker process."""

from .main import main

main()

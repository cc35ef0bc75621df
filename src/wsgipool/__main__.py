"""``python -m wsgipool serve MODULE:APP``."""

from ._cli.main import run

run()

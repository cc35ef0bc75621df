"""``python -m wsgipool serve MODULE:APP``."""

from ._cli import run

run()

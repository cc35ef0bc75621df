"""Process titles (``ps``, ``top``): set when setproctitle is installed, else skipped."""

from __future__ import annotations


def set_title(title: str) -> bool:
    """Set this process's title; False if setproctitle (the ``title`` extra) is absent."""
    try:
        import setproctitle
    except ImportError:
        return False
    setproctitle.setproctitle(title)
    return True


def front_title(app_label: str) -> str:
    return f"wsgipool: front [{app_label}]"

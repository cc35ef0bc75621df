"""The protocol class ``wsgipool serve`` gives uvicorn, by parser.

A module of its own so that neither parser's module imports the other: the httptools one
is imported only when chosen, since a plain ``pip install uvicorn`` has only h11.
"""

from __future__ import annotations

import asyncio

from .edge import EdgeSettings
from .uvicorn import EdgeH11Protocol


def protocol_class(kind: str, edge: EdgeSettings) -> type[asyncio.Protocol]:
    """The protocol class for ``http=`` (``"h11"`` or ``"httptools"``), bound to ``edge``."""
    base: type[asyncio.Protocol] = EdgeH11Protocol
    if kind != "h11":  # httptools is optional: a plain `pip install uvicorn` has only h11
        from .httptools import EdgeHttpToolsProtocol

        base = EdgeHttpToolsProtocol
    return type(base.__name__, (base,), {"edge": edge})

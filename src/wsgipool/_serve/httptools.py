"""uvicorn's httptools protocol with wsgipool's edge (see :mod:`wsgipool._serve.uvicorn`).

A module of its own because httptools is optional: importing uvicorn's httptools
protocol without it fails, and a plain ``pip install uvicorn`` serves with h11.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .._front.guard import CONNECT_REFUSED
from .uvicorn import EdgeMixin


class EdgeHttpToolsProtocol(EdgeMixin, HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge.

    Where the parser is comes from uvicorn's own state, so no parser callback is
    wrapped: a new head gets a new ``scope``, a complete head a new ``cycle`` holding
    that scope, a complete message ``more_body = False``.
    """

    def between_messages(self) -> bool:
        cycle = self.cycle
        if cycle is None:
            return self.scope is None
        return cycle.scope is self.scope and not cycle.more_body

    def inside_head(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.scope is not self.scope or not cycle.more_body

    def receiving_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.scope is self.scope and cycle.more_body

    def send_400_response(self, msg: str) -> None:
        if self.scope is not None and self.scope.get("method") == "CONNECT":
            self.refuse(CONNECT_REFUSED)  # its authority-form target is no URL to uvicorn
            return
        super().send_400_response(msg)

    def _unsupported_upgrade_warning(self) -> None:
        if self.scope.get("method") != "CONNECT":  # refused by the adapter, and logged
            super()._unsupported_upgrade_warning()

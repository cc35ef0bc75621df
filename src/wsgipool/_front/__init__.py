"""The front: the ASGI side, on the event loop.

An ASGI scope becomes an environ (``adapter``), the guard refuses what no worker should
see (``guard``), the body is taken in at the client's pace and held (``intake``,
``spool``), an early answer lingers for the rest of the body (``linger``), and one
request's exchange with its worker is relayed (``exchange``, ``relay``). It uses the pool
through the pool's ``Pool`` and ``Lease``, and the wire for frames.
"""

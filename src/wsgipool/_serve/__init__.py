"""The server edge of ``wsgipool serve``: the HTTP server wsgipool runs itself.

uvicorn's protocols with a header timeout, a connection bound and head limits counted on
the raw bytes (``edge``, ``uvicorn``, ``httptools``), and the host that runs them on
sockets, with reloads and graceful stops (``host``). It serves the front's ASGI app.
"""

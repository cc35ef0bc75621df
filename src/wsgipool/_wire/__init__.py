"""The wire: what the front and a worker agree on, and nothing else.

The frames: their kinds and typed tuples (``kinds``), their decoding (``reader``) and
their encoding (``frames``, which re-exports the other two); the app reference a worker
imports (``appspec``), the environ's CGI part that crosses the pipe (``environ``), and an
app's exception carried back (``remote``). Both sides import this room, so it imports only the
kernel (``wsgipool._errors``, ``wsgipool._types``) and the standard library and msgpack:
no event loop, nothing of the front or the pool.
"""

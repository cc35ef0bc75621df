"""The worker process: import the app once, then serve one request at a time.

Synchronous, in a child process of its own (``python -m wsgipool._worker``). It imports
only this room, the wire and the kernel (errors, types, logging, titles): no anyio, no
asyncio, none of the front or the pool.

``main`` is the process's entry (and the preload template), ``channel`` its end of the
pipes, ``serve`` runs one request, ``wsgi`` holds the PEP 3333 pieces the app is handed.
"""

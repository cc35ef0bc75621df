"""The command line, ``wsgipool serve``: flags and ``WSGIPOOL_*`` variables into a
``Config`` (``parser``), then the server edge (``main``). The only room that turns
exceptions into exit codes.
"""

from .main import main as main
from .main import run as run

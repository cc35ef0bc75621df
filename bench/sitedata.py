"""The SQLite database behind the ``django`` and ``flask`` workloads.

Both apps read the same table from the file named by ``BENCH_DB``, render the same template
(``bench/templates/items.html``) and so serve the same page: the benchmark compares servers,
not frameworks. ``run.py`` creates the file in its temporary directory before any server starts.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

ENV = "BENCH_DB"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ROWS = 20  # the table
SHOWN = 10  # rows on the page
QUERY = "SELECT id, name, price, stock FROM item WHERE stock > 0 ORDER BY name LIMIT ?"


def create(path: Path, rows: int = ROWS) -> Path:
    """A fresh database of ``rows`` items at ``path``."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "price REAL NOT NULL, stock INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT INTO item (name, price, stock) VALUES (?, ?, ?)",
            [(f"Item {i:02d} <&>", round(1.5 * i + 0.99, 2), (i * 7) % 5) for i in range(rows)],
        )
    db.close()
    return path


def database() -> str:
    """The file the apps read; a clear error if the benchmark did not create it."""
    path = os.environ.get(ENV, "")
    if not path or not Path(path).is_file():
        raise RuntimeError(f"{ENV} must name a database made by bench.sitedata.create()")
    return path

"""``minifaktory backup PATH``: a consistent copy of the database while the server serves.

The copy is taken in one read transaction (SQLite's ``VACUUM INTO``), so it is a
single moment of the job store even while commands keep committing; it is
written beside PATH and renamed into place only when complete. Restore with
``minifaktory restore PATH`` while the server is stopped.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from minifaktory.config import database_path
from minifaktory.errors import MinifaktoryError
from minifaktory.store import db


def database_options(parser: argparse.ArgumentParser) -> None:
    """The server's flags that say which database file to use."""
    parser.add_argument("--db", help="the database file (as the server's --db)")
    parser.add_argument("-d", dest="data_dir", help="the storage directory (as the server's -d)")
    parser.add_argument("-e", dest="environment", help="the environment (as the server's -e)")


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="minifaktory backup", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the backup file to write")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    database_options(parser)
    args = parser.parse_args(argv)
    try:
        source = database_path(args.db, args.data_dir, args.environment, environ)
        target: Path = args.path
        if str(source) == ":memory:" or not Path(source).exists():
            raise MinifaktoryError(f"no database at {source}")
        if target.is_dir():
            target = target / Path(source).name
        if target.exists() and not args.force:
            raise MinifaktoryError(f"{target} exists: choose another path or pass --force")
        size = db.backup(source, target)
    except MinifaktoryError as exc:
        print(f"minifaktory backup: {exc}")
        return 1
    print(f"backed up {source} to {target} ({size:,} bytes)")
    return 0

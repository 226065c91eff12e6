"""``minifaktory restore BACKUP``: put a backup back as the server's database.

The server must be stopped (a running server holds its file and restore refuses).
The backup is checked first (SQLite's integrity check, and that it is a
minifaktory database this version can read); the current file, if any, is kept
as ``<file>.before-restore`` unless ``--no-keep`` is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from minifaktory.config import database_path
from minifaktory.errors import MinifaktoryError
from minifaktory.store import db
from minifaktory.tools.backup import database_options


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="minifaktory restore", description=__doc__.splitlines()[0]
    )
    parser.add_argument("backup", type=Path, help="a file written by minifaktory backup")
    parser.add_argument("--no-keep", action="store_true", help="do not keep the current file")
    database_options(parser)
    args = parser.parse_args(argv)
    try:
        target = Path(database_path(args.db, args.data_dir, args.environment, environ))
        problem = db.check(args.backup) if args.backup.is_file() else f"no file {args.backup}"
        if problem:
            raise MinifaktoryError(problem)
        if db.in_use(target):
            raise MinifaktoryError(f"{target} is in use by a running server: stop it first")
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = ""
        if target.exists() and not args.no_keep:
            keep = target.with_name(f"{target.name}.before-restore")
            db.backup(target, keep)
            kept = f" (the previous file is kept as {keep})"
        db.restore(args.backup, target)
    except (MinifaktoryError, OSError) as exc:
        print(f"minifaktory restore: {exc}")
        return 1
    print(f"restored {target} from {args.backup}{kept}")
    return 0

"""``minifaktory migrate --to tcp://host:7419``: move the jobs to another Faktory server.

For a team that outgrew one machine: with the minifaktory server stopped, this
pushes every waiting job (queue by queue, in fetch order), every scheduled job
(keeping ``at``) and every job waiting for a retry (scheduled at its retry time,
keeping ``retry``, ``custom`` and its ``failure``, so its retry count goes on)
to the target with PUSHB, and writes the dead set to a JSON Lines file. What the
target accepted is recorded in the source file, so a re-run after an
interruption or a refusal sends only the rest. The source keeps its jobs: do not
start minifaktory on it again once the workers use the new server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from minifaktory.client import Client, FaktoryError, parse_url
from minifaktory.clock import SystemClock
from minifaktory.config import database_path
from minifaktory.errors import MinifaktoryError
from minifaktory.store import SetName, Store
from minifaktory.store.reader import Reader
from minifaktory.tools.backup import database_options

BATCH = 500
KINDS = ("queued", "scheduled", "retries")


@dataclass
class Tally:
    """What a run did, per kind of job."""

    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    dead: int = 0


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="minifaktory migrate", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--to", required=True, help="the target: tcp://[:password@]host:port")
    parser.add_argument(
        "--dead-file", type=Path, default=Path("minifaktory-dead.jsonl"),
        help="where the dead set goes, one job per line (default ./minifaktory-dead.jsonl)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=BATCH, help=f"jobs per PUSHB ({BATCH})")
    parser.add_argument("--dry-run", action="store_true", help="count, push nothing")
    database_options(parser)
    args = parser.parse_args(argv)
    try:
        source = database_path(args.db, args.data_dir, args.environment, environ)
        if str(source) == ":memory:" or not Path(source).exists():
            raise MinifaktoryError(f"no database at {source}")
        target = parse_url(args.to)
        store = Store(source, "full", serve=True)  # refuses while a server runs on it
    except (MinifaktoryError, FaktoryError) as exc:
        print(f"minifaktory migrate: {exc}")
        return 1
    reader = Reader(source)
    try:
        migration = Migration(store, reader, target.display, max(args.batch, 1))
        if args.dry_run:
            counts = migration.count()
            print(", ".join(f"{n:,} {kind}" for kind, n in counts.items()) + " to move")
            return 0
        with Client(args.to) as client:
            tally = migration.run(client, Progress(sys.stderr, sum(migration.count().values())))
        tally.dead = export_dead(reader, args.dead_file)
    except (MinifaktoryError, FaktoryError, OSError) as exc:
        print(f"minifaktory migrate: {exc}")
        return 1
    finally:
        reader.close()
        store.close()
    print(report(tally, target.display, args.dead_file))
    return 1 if tally.refused else 0


class Migration:
    """Reads the source in order, pushes in batches, records what the target took."""

    def __init__(self, store: Store, reader: Reader, target: str, batch: int) -> None:
        self.store, self.reader, self.target, self.batch = store, reader, target, batch

    def count(self) -> dict[str, int]:
        """Jobs of each kind in the source (moved before or not)."""
        return {kind: sum(1 for _ in self.jobs(kind)) for kind in KINDS}

    def jobs(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every job of one kind, ready to push, in order."""
        if kind == "queued":
            for queue in self.reader.queue_names():
                yield from (
                    json.loads(r.payload) for r in self.reader.whole_queue(queue, self.batch)
                )
            return
        set_kind = SetName.SCHEDULED if kind == "scheduled" else SetName.RETRIES
        for row in self.reader.whole_set(set_kind, self.batch):
            job = json.loads(row.payload)
            if kind == "retries":
                job["at"] = (job.get("failure") or {}).get("next_at") or job.get("at", "")
            yield job

    def run(self, client: Client, progress: Progress) -> Tally:
        tally = Tally()
        for kind in KINDS:
            pending: list[dict[str, Any]] = []
            for job in self.jobs(kind):
                pending.append(job)
                if len(pending) >= self.batch:
                    self._send(client, kind, pending, tally, progress)
                    pending = []
            if pending:
                self._send(client, kind, pending, tally, progress)
        progress.done()
        return tally

    def _send(
        self,
        client: Client,
        kind: str,
        batch: list[dict[str, Any]],
        tally: Tally,
        progress: Progress,
    ) -> None:
        done = self.store.migrated(self.target, [str(j.get("jid", "")) for j in batch])
        todo = [j for j in batch if j.get("jid") not in done]
        tally.skipped += len(batch) - len(todo)
        refused = client.push_bulk(todo) if todo else {}
        accepted = [str(j["jid"]) for j in todo if j["jid"] not in refused]
        self.store.begin()
        self.store.record_migrated(self.target, accepted, SystemClock().now_ns())
        self.store.commit()
        tally.moved[kind] += len(accepted)
        tally.refused.update(refused)
        progress.advance(len(batch))


def export_dead(reader: Reader, path: Path) -> int:
    """Write the dead set to ``path``, one JSON job per line; how many."""
    count = 0
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as out:
        for row in reader.whole_set(SetName.DEAD, BATCH):
            out.write(row.payload.decode() + "\n")
            count += 1
    partial.replace(path)
    return count


class Progress:
    """A progress bar on a terminal; a line per tenth otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.done_count, self.shown = stream, max(total, 1), 0, -1
        self.tty = stream.isatty()

    def advance(self, count: int) -> None:
        self.done_count += count
        share = min(self.done_count / self.total, 1.0)
        if self.tty:
            bar = "#" * int(share * 30)
            self.stream.write(f"\r[{bar:<30}] {self.done_count:,}/{self.total:,} jobs")
        elif int(share * 10) > self.shown:
            self.shown = int(share * 10)
            self.stream.write(f"{self.done_count:,}/{self.total:,} jobs\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def report(tally: Tally, target: str, dead_file: Path) -> str:
    """The summary a person reads at the end."""
    moved = ", ".join(f"{n:,} {kind}" for kind, n in tally.moved.items())
    lines = [f"moved {moved} to {target}"]
    if tally.skipped:
        lines.append(f"{tally.skipped:,} moved by an earlier run were skipped")
    lines.append(f"{tally.dead:,} dead jobs written to {dead_file}")
    if tally.refused:
        lines.append(f"{len(tally.refused):,} refused by the target (still in the source;"
                     " fix and run again):")  # fmt: skip
        lines += [f"  {jid}: {why}" for jid, why in sorted(tally.refused.items())[:20]]
        if len(tally.refused) > 20:
            lines.append(f"  … and {len(tally.refused) - 20:,} more")
    return "\n".join(lines)

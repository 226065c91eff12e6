"""The least a Python job server can do for PUSH, FETCH and ACK with the same durability.

Baseline for the throughput benchmark's CPU and jobs/s figures. It keeps
minifaktory's durability rules and nothing else:

* every command that arrives in one loop tick shares one SQLite transaction,
  committed at the end of the tick;
* a PUSH is answered once its commit is fsynced (on a thread of its own, one
  fsync covering every commit made while the previous one ran); FETCH and ACK
  are answered at commit, their fsync following within 10 ms;
* a job is a row in ``jobs`` while queued and a row in ``working`` while
  reserved; FETCH moves it, ACK deletes it.

No validation beyond reading the jid and queue, no retries, scheduled jobs,
counters, history, workers, timeouts or Web UI: the gap to minifaktory is the
price of those, and the gap to ``echo_server.py`` is the price of SQLite and
durability. Enough of the protocol for ``bench_throughput.py``'s client: HELLO,
PUSH, FETCH (waits while the queues are empty), ACK, INFO and END.

Run: ``python benchmarks/floor_server.py HOST PORT DB [uvloop|asyncio]``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
from typing import cast

import apsw
import msgspec
from echo_server import GREETING, OK, run, serve_until_signalled

NULL = b"$-1\r\n"
LAZY_SYNC_DELAY = 0.01


class Pushed(msgspec.Struct):
    jid: str
    queue: str = "default"


class Acked(msgspec.Struct):
    jid: str


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Floor:
    """The store, the group commit and the fsync thread."""

    def __init__(self, path: str) -> None:
        self.db = apsw.Connection(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        # As minifaktory: SQLite syncs at checkpoints only; this file fsyncs the WAL itself.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS jobs"
            " (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (queue, id)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS working (jid TEXT PRIMARY KEY, payload BLOB NOT NULL)"
        )
        self.cur = self.db.cursor()
        self.wal_fd = -1
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.in_tx = False
        self.at_commit: list[tuple[asyncio.Transport, bytes]] = []
        self.at_sync: list[tuple[asyncio.Transport, bytes]] = []
        self.unsynced: list[tuple[asyncio.Transport, bytes]] = []
        self.lazy = False
        self.syncing = False
        self.lazy_timer: asyncio.TimerHandle | None = None
        self.go = threading.Lock()
        self.go.acquire()
        self.thread = threading.Thread(target=self.sync_thread, daemon=True)
        self.thread.start()
        self.waiting: dict[str, collections.deque[asyncio.Transport]] = collections.defaultdict(
            collections.deque
        )

    # -- transactions ------------------------------------------------------------------

    def begin(self) -> None:
        if not self.in_tx:
            self.cur.execute("BEGIN IMMEDIATE")
            self.in_tx = True
            self.loop.call_soon(self.commit)

    def commit(self) -> None:
        self.cur.execute("COMMIT")
        self.in_tx = False
        for transport, reply in self.at_commit:
            transport.write(reply)
        self.at_commit.clear()
        self.unsynced += self.at_sync
        self.at_sync = []
        if self.unsynced:
            if not self.syncing:
                self.start_sync()
        elif self.lazy_timer is None and not self.syncing:
            self.lazy_timer = self.loop.call_later(LAZY_SYNC_DELAY, self.sync_lazily)
        self.lazy = True

    def sync_lazily(self) -> None:
        self.lazy_timer = None
        if self.lazy and not self.syncing:
            self.start_sync()

    def start_sync(self) -> None:
        self.syncing = True
        self.lazy = False
        self.batch, self.unsynced = self.unsynced, []
        self.go.release()

    def sync_thread(self) -> None:
        while True:
            self.go.acquire()
            if self.wal_fd < 0:
                self.wal_fd = os.open(self.path + "-wal", os.O_RDONLY)
            os.fdatasync(self.wal_fd)
            self.loop.call_soon_threadsafe(self.synced)

    def synced(self) -> None:
        self.syncing = False
        for transport, reply in self.batch:
            transport.write(reply)
        if self.unsynced:
            self.start_sync()

    # -- verbs -------------------------------------------------------------------------

    def push(self, transport: asyncio.Transport, body: bytes) -> None:
        job = msgspec.json.decode(body, type=Pushed)
        self.begin()
        self.cur.execute("INSERT INTO jobs (queue, payload) VALUES (?, ?)", (job.queue, body))
        self.at_sync.append((transport, OK))
        waiting = self.waiting.get(job.queue)
        if waiting:
            self.fetch(waiting.popleft(), [job.queue])

    def fetch(self, transport: asyncio.Transport, queues: list[str]) -> None:
        self.begin()
        for queue in queues:
            row = self.cur.execute(
                "DELETE FROM jobs WHERE id = (SELECT min(id) FROM jobs WHERE queue = ?)"
                " RETURNING payload",
                (queue,),
            ).fetchone()
            if row is not None:
                payload = cast(bytes, row[0])
                jid = msgspec.json.decode(payload, type=Pushed).jid
                self.cur.execute("INSERT INTO working VALUES (?, ?)", (jid, payload))
                self.at_commit.append((transport, bulk(payload)))
                return
        for queue in queues:
            self.waiting[queue].append(transport)

    def ack(self, transport: asyncio.Transport, body: bytes) -> None:
        jid = msgspec.json.decode(body, type=Acked).jid
        self.begin()
        self.cur.execute("DELETE FROM working WHERE jid = ?", (jid,))
        self.at_commit.append((transport, OK))

    def info(self) -> bytes:
        queues = dict(self.db.execute("SELECT queue, count(*) FROM jobs GROUP BY queue"))
        working = self.db.execute("SELECT count(*) FROM working").fetchall()[0][0]
        return bulk(
            msgspec.json.encode({"faktory": {"queues": queues, "sets": {"working": working}}})
        )


#: Every connection reads into this buffer and copies out what arrived (asyncio's
#: plain ``Protocol`` would allocate 256 KiB per read: an mmap and munmap each time).
READ_BUFFER = memoryview(bytearray(65536))


class Connection(asyncio.BufferedProtocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buf = b""
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(GREETING)

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        buf = self.buf + READ_BUFFER[:nbytes]
        lines = buf.split(b"\r\n")
        self.buf = lines.pop()
        for line in lines:
            verb, _, rest = line.partition(b" ")
            if verb == b"PUSH":
                self.floor.push(self.transport, rest)
            elif verb == b"FETCH":
                self.floor.fetch(self.transport, rest.decode().split())
            elif verb == b"ACK":
                self.floor.ack(self.transport, rest)
            elif verb == b"HELLO":
                self.transport.write(OK)
            elif verb == b"INFO":
                self.transport.write(self.floor.info())
            elif verb == b"END":
                self.transport.close()
            else:
                self.transport.write(b"-ERR Unknown command " + verb + b"\r\n")


async def main(host: str, port: int, path: str) -> None:
    floor = Floor(path)
    await serve_until_signalled(lambda: Connection(floor), host, port)


if __name__ == "__main__":
    run(
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3]),
        sys.argv[4] if len(sys.argv) > 4 else "uvloop",
    )

"""Schema and migrations, versioned with ``PRAGMA user_version``.

Each entry of ``MIGRATIONS`` moves the file from version ``i`` to ``i + 1``;
a fresh file runs them all, in one transaction each.
"""

from __future__ import annotations

import apsw

from minifaktory.errors import StoreError

#: "MFKY": marks the file as minifaktory's so other tools can recognise it.
APPLICATION_ID = 0x4D464B59

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE queues (
        name   TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    -- Jobs waiting in a queue. Order: priority (higher first), then id (FIFO).
    CREATE TABLE queued (
        id       INTEGER PRIMARY KEY,
        queue    TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 5,
        jid      TEXT NOT NULL,
        payload  BLOB NOT NULL
    );
    CREATE INDEX queued_order ON queued (queue, priority DESC, id);

    -- The scheduled (1), retries (2) and dead (3) sets; score in ns.
    CREATE TABLE sorted (
        id      INTEGER PRIMARY KEY,
        kind    INTEGER NOT NULL,
        score   INTEGER NOT NULL,
        jid     TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX sorted_score ON sorted (kind, score);
    CREATE INDEX sorted_jid ON sorted (jid);

    -- Reservations of fetched jobs, keyed by jid as Faktory's working map is.
    CREATE TABLE working (
        jid         TEXT PRIMARY KEY,
        queue       TEXT NOT NULL,
        wid         TEXT NOT NULL,
        reserved_at INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        payload     BLOB NOT NULL
    );
    CREATE INDEX working_expiry ON working (expires_at);

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE history (
        day       TEXT PRIMARY KEY,
        processed INTEGER NOT NULL DEFAULT 0,
        failures  INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    # 2: expiring jobs and unique locks.
    """
    ALTER TABLE queued ADD COLUMN expires_at INTEGER;
    CREATE INDEX queued_expiry ON queued (expires_at) WHERE expires_at IS NOT NULL;

    -- Uniqueness locks live with their queue: clearing the queue clears them.
    CREATE TABLE unique_locks (
        queue      TEXT NOT NULL,
        key        TEXT NOT NULL,
        jid        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, key)
    ) WITHOUT ROWID;
    CREATE INDEX unique_locks_jid ON unique_locks (jid);
    CREATE INDEX unique_locks_expiry ON unique_locks (expires_at);
    """,
    # 3: job tracking (TRACK SET / GET).
    """
    CREATE TABLE tracking (
        jid        TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        percent    INTEGER,
        "desc"     TEXT,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tracking_updated ON tracking (updated_at);
    """,
    # 4: the last firing of each cron entry, so restarts neither repeat nor skip one.
    """
    CREATE TABLE cron_runs (
        key     TEXT PRIMARY KEY,
        last_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: batches. ``pending`` counts members not yet successful, ``failed`` those
    # of them that failed at least once (listed in batch_failed).
    """
    CREATE TABLE batches (
        bid          TEXT PRIMARY KEY,
        parent       TEXT NOT NULL DEFAULT '',
        description  TEXT NOT NULL DEFAULT '',
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        committed    INTEGER NOT NULL DEFAULT 0,
        total        INTEGER NOT NULL DEFAULT 0,
        pending      INTEGER NOT NULL DEFAULT 0,
        failed       INTEGER NOT NULL DEFAULT 0,
        complete_job BLOB,
        success_job  BLOB,
        complete_st  TEXT NOT NULL DEFAULT '',
        success_st   TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    CREATE INDEX batches_parent ON batches (parent);
    CREATE TABLE batch_failed (
        bid TEXT NOT NULL,
        jid TEXT NOT NULL,
        PRIMARY KEY (bid, jid)
    ) WITHOUT ROWID;
    """,
    # 6: what happened to a job off the happy path (fetched before a failure, failed,
    # retried, moved by hand or MUTATE), for the Web UI's timeline. Rows go with the job.
    """
    CREATE TABLE job_events (
        jid    TEXT NOT NULL,
        at     INTEGER NOT NULL,
        event  TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_events_jid ON job_events (jid, at);
    CREATE INDEX job_events_at ON job_events (at);
    CREATE INDEX batches_created ON batches (created_at);
    """,
    # 7: one row an idle server rewrites now and then to prove the file takes writes.
    """
    CREATE TABLE probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at INTEGER NOT NULL
    );
    """,
    # 8: jobs ``minifaktory migrate`` has handed to another server, so a re-run skips them.
    """
    CREATE TABLE migrated (
        target TEXT NOT NULL,
        jid    TEXT NOT NULL,
        at     INTEGER NOT NULL,
        PRIMARY KEY (target, jid)
    ) WITHOUT ROWID;
    """,
    # 9: locks are released by their primary key (a reservation knows its lock's key),
    # so the jid index only cost every unique job an insert and a delete.
    """
    DROP INDEX unique_locks_jid;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def version(conn: apsw.Connection) -> int:
    """The schema version stored in the file."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: apsw.Connection) -> None:
    """Bring the file up to ``SCHEMA_VERSION``; refuse files from newer code."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])  # type: ignore[index]
    current = version(conn)
    if current == 0 and app_id == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        if tables and tables[0]:
            raise StoreError("this SQLite file was not created by minifaktory; refusing to use it")
    elif app_id != APPLICATION_ID:
        raise StoreError("this SQLite file was not created by minifaktory; refusing to use it")
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {current} is newer than this minifaktory "
            f"understands ({SCHEMA_VERSION}); upgrade minifaktory"
        )
    for target in range(current, SCHEMA_VERSION):
        with conn:
            conn.execute(MIGRATIONS[target])
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={target + 1}")

"""The store on real SQLite files: verbs, transactions, schema versioning."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from minifaktory.errors import StoreError
from minifaktory.store import SetName, Store, WorkingRow
from minifaktory.store.reader import Reader
from minifaktory.store.schema import APPLICATION_ID, SCHEMA_VERSION


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.db", "normal")


def test_queue_fifo_with_priority(store: Store) -> None:
    store.begin()
    store.register_queue("q")
    store.enqueue("q", 5, "a", b"A")
    store.enqueue("q", 5, "b", b"B")
    store.enqueue("q", 9, "c", b"C")
    store.commit()
    assert store.head("q") == b"C"
    assert [store.take("q"), store.take("q"), store.take("q"), store.take("q")] == [
        ("c", b"C", None),
        ("a", b"A", None),
        ("b", b"B", None),
        None,
    ]


def test_rollback_discards(store: Store) -> None:
    store.begin()
    store.register_queue("q")
    store.enqueue("q", 5, "a", b"A")
    store.rollback()
    assert store.snapshot().queues == []
    store.rollback()  # harmless without a transaction


def test_sets_and_snapshot(store: Store) -> None:
    store.begin()
    store.add(SetName.SCHEDULED, 30, "late", b"L")
    store.add(SetName.SCHEDULED, 10, "early", b"E")
    store.add(SetName.SCHEDULED, 20, "mid", b"M")
    store.add(SetName.DEAD, 5, "dead", b"D")
    store.commit()
    snap = store.snapshot()
    assert snap.set_sizes == {SetName.SCHEDULED: 3, SetName.RETRIES: 0, SetName.DEAD: 1}
    due = store.take_due(SetName.SCHEDULED, 20, 100)
    assert [e.jid for e in due] == ["early", "mid"]
    assert [e.jid for e in store.entries(SetName.SCHEDULED)] == ["late"]
    [late] = store.entries_by_jid(SetName.SCHEDULED, ["late", "late", "nope"])
    store.move_entries([late.id], SetName.DEAD, 99)
    assert [e.jid for e in store.entries(SetName.DEAD)] == ["dead", "late"]
    store.delete_entries([late.id])
    store.clear_set(SetName.DEAD)
    assert store.snapshot().set_sizes[SetName.DEAD] == 0


def test_reservations(store: Store) -> None:
    store.reserve(WorkingRow("j1", "q", "w", 1, 100, b"J1"))
    store.reserve(WorkingRow("j2", "q", "w", 1, 50, b"J2"))
    store.reserve(WorkingRow("j1", "q", "w", 2, 200, b"J1b"))
    assert store.expired(100, 10) == ["j2"]
    assert store.release("j1") == b"J1b"
    assert store.release("j1") is None
    assert [r.jid for r in store.snapshot().working] == ["j2"]


def test_counters_and_history(store: Store) -> None:
    store.add_counts({"processed": 3, "failures": 1}, {"2026-07-01": [2, 1], "2026-07-02": [1, 0]})
    store.add_counts({"processed": 1, "failures": 1, "expired": 2}, {"2026-07-02": [1, 1]})
    assert store.snapshot().counters == {"processed": 4, "failures": 2, "expired": 2}
    assert Reader(store.path).history("2026-07-02") == {"2026-07-02": (2, 1)}
    store.flush()
    assert store.snapshot().counters == {}


def test_queue_registry_and_removal(store: Store) -> None:
    store.register_queue("a")
    store.register_queue("a")
    store.enqueue("a", 5, "x", b"X")
    store.set_paused("a", True)
    assert store.snapshot().queues == [("a", True, 1)]
    store.remove_queue("a")
    assert store.snapshot().queues == []


def test_schema_markers(tmp_path: Path) -> None:
    Store(tmp_path / "m.db").close()
    conn = apsw.Connection(str(tmp_path / "m.db"))
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_refuses_newer_schema(tmp_path: Path) -> None:
    Store(tmp_path / "n.db").close()
    conn = apsw.Connection(str(tmp_path / "n.db"))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this minifaktory understands"):
        Store(tmp_path / "n.db")


def test_refuses_foreign_database(tmp_path: Path) -> None:
    conn = apsw.Connection(str(tmp_path / "f.db"))
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreError, match="not created by minifaktory"):
        Store(tmp_path / "f.db")


def test_unknown_durability(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="durability"):
        Store(tmp_path / "d.db", "sometimes")


def test_front_of_queue_and_expiry(store: Store) -> None:
    store.enqueue("q", 5, "a", b"A", 100)
    store.enqueue("q", 5, "b", b"B")
    store.enqueue("q", 5, "front", b"F", front=True)
    store.enqueue("r", 5, "c", b"C", 50)
    assert store.purge_expired(60) == ["r"]
    assert store.take("q") == ("front", b"F", None)
    assert store.take("q") == ("a", b"A", 100)


def test_unique_locks(store: Store) -> None:
    assert store.take_lock("q", "k", "j1", 100)
    assert store.lock_holder("q", "k", 50) == "j1"
    assert store.lock_holder("q", "k", 100) is None  # expired
    assert store.lock_holder("other", "k", 50) is None
    assert not store.take_lock("q", "k", "j2", 200)  # took over the expired row
    assert Reader(store.path).locks("q", 10) == [("k", "j2", 200)]
    store.take_lock("q", "k2", "j3", 300)
    assert store.snapshot().locks == {"q": 2}
    assert not store.release_lock("q", "k", "j1")  # j2 took it over: j1 releases nothing
    assert store.release_lock("q", "k", "j2")
    assert not store.release_lock("q", "k", "j2")
    store.add(SetName.RETRIES, 1, "j3", b"J3")
    assert store.release_locks_of_set(SetName.RETRIES) == ["q"]
    store.take_lock("q", "k4", "j4", 10)
    assert store.purge_locks(10) == ["q"]
    store.take_lock("gone", "k", "j5", 10**12)
    store.remove_queue("gone")
    assert store.snapshot().locks == {}

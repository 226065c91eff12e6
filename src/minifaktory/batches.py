"""Batches (spec §5.4): jobs grouped under a bid, with ``complete`` and ``success``
callbacks fired in Faktory Enterprise's order.

How this works: a batch row counts its members. A job joins by being pushed
with ``custom.bid``; ``pending`` counts members not yet successful and
``failed`` those of them that failed at least once. Once the batch is
committed and every member has run once (and every child batch's ``complete``
callback has finished), the ``complete`` callback is pushed (``complete_st``
"1") and, when it is acknowledged, becomes "2". Only then, and once every
member succeeded (and every child's ``success`` callback finished), is the
``success`` callback pushed. Each change re-checks the parent batch.

Callback jobs carry ``custom._bid`` and ``custom._cb`` so that their ACK finds
the batch. Every method runs inside the broker's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from minifaktory import jobs
from minifaktory.clock import NS, format_ns
from minifaktory.errors import CommandError
from minifaktory.payloads import Job, encode, job_decoder
from minifaktory.store import BatchRow, Store

log = logging.getLogger(__name__)

#: A batch nobody committed is dropped after this long without activity (Enterprise: 30 min).
OPEN_TTL_NS = 30 * 60 * NS
#: A batch whose success callback finished is forgotten after this long.
DONE_TTL_NS = 7 * 86_400 * NS
COMPLETE = "complete"
SUCCESS = "success"


class BatchNew(msgspec.Struct, kw_only=True):
    """The BATCH NEW payload (the Go client also sends ``"bid":""``)."""

    description: str = ""
    parent_bid: str = ""
    success: dict[str, Any] | None = None
    complete: dict[str, Any] | None = None
    bid: str = ""


batch_new_decoder = msgspec.json.Decoder(BatchNew)


def no_such_batch(bid: str) -> CommandError:
    return CommandError(f"No such batch {bid}")


def callback_of(job: Job) -> tuple[str, str] | None:
    """(bid, "complete"|"success") when ``job`` is a batch callback."""
    custom = job.custom or {}
    bid, kind = custom.get("_bid"), custom.get("_cb")
    if isinstance(bid, str) and kind in (COMPLETE, SUCCESS):
        return bid, str(kind)
    return None


def member_of(job: Job) -> str:
    """The bid a job belongs to ('' for none)."""
    bid = (job.custom or {}).get("bid")
    return bid if isinstance(bid, str) else ""


class BatchBook:
    """Batch bookkeeping over the store; ``push`` pushes a callback job."""

    def __init__(self, store: Store, push: Callable[[Job, int], None]) -> None:
        self.store = store
        self.push = push
        self.open_count, self.committed_count = store.batch_counts()

    def _get(self, bid: str) -> BatchRow:
        row = self.store.batch(bid) if bid else None
        if row is None:
            raise no_such_batch(bid)
        return row

    # -- commands --------------------------------------------------------------------

    def new(self, spec: BatchNew, now: int) -> str:
        """BATCH NEW: store the batch and its callback jobs; returns the new bid."""
        if spec.parent_bid:
            self._get(spec.parent_bid)
        bid = "b-" + jobs.new_jid()
        row = BatchRow(bid, spec.parent_bid, spec.description, now, now)
        row.complete_job = _callback_payload(spec.complete, bid, COMPLETE)
        row.success_job = _callback_payload(spec.success, bid, SUCCESS)
        self.store.create_batch(row)
        self.open_count += 1
        return bid

    def open(self, bid: str, now: int) -> None:
        """BATCH OPEN: allow more jobs; callbacks wait for the next COMMIT."""
        row = self._get(bid)
        if row.committed:
            row.committed = False
            self.open_count += 1
            self.committed_count -= 1
        row.updated_at = now
        self.store.save_batch(row)

    def commit(self, bid: str, now: int) -> None:
        """BATCH COMMIT: no more jobs; callbacks may fire from now on."""
        row = self._get(bid)
        if not row.committed:
            row.committed = True
            self.open_count -= 1
            self.committed_count += 1
        row.updated_at = now
        self._settle(row, now)

    def child(self, parent: str, child: str, now: int) -> None:
        """BATCH CHILD (fossas/faktory-plugins): attach an existing batch to a parent."""
        self._get(parent)
        row = self._get(child)
        row.parent = parent
        row.updated_at = now
        self.store.save_batch(row)

    def status(self, bid: str) -> dict[str, object]:
        """BATCH STATUS, in the Go client's field order."""
        row = self._get(bid)
        out: dict[str, object] = {"bid": row.bid}
        if row.parent:
            out["parent_bid"] = row.parent
        if row.description:
            out["description"] = row.description
        out.update(
            created_at=format_ns(row.created_at),
            complete_st=row.complete_st,
            success_st=row.success_st,
            total=row.total,
            pending=row.pending,
            failed=row.failed,
        )
        return out

    # -- members and callbacks ----------------------------------------------------------

    def joined(self, bid: str, now: int) -> None:
        """A job was pushed with ``custom.bid``."""
        row = self._get(bid)
        row.total += 1
        row.pending += 1
        row.updated_at = now
        self.store.save_batch(row)

    def member_succeeded(self, bid: str, jid: str, now: int) -> None:
        row = self.store.batch(bid)
        if row is None:
            return
        row.pending -= 1
        if self.store.clear_batch_failure(bid, jid):
            row.failed -= 1
        row.updated_at = now
        self._settle(row, now)

    def member_failed(self, bid: str, jid: str, now: int) -> None:
        row = self.store.batch(bid)
        if row is None or not self.store.mark_batch_failure(bid, jid):
            return
        row.failed += 1
        row.updated_at = now
        self._settle(row, now)

    def callback_succeeded(self, bid: str, kind: str, now: int) -> None:
        row = self.store.batch(bid)
        if row is None:
            return
        before = (row.complete_st, row.success_st)
        if kind == COMPLETE and row.complete_st == "1":
            row.complete_st = "2"
        elif kind == SUCCESS and row.success_st == "1":
            row.success_st = "2"
        row.updated_at = now
        self._settle(row, now, before)

    def _settle(self, row: BatchRow, now: int, before: tuple[str, str] | None = None) -> None:
        """Fire what is due, save, and let the parent re-check when a state moved."""
        if before is None:
            before = (row.complete_st, row.success_st)
        if row.committed:
            children = self.store.batch_children(row.bid)
            if (
                row.complete_st == ""
                and row.pending == row.failed
                and all(c.complete_st == "2" for c in children)
            ):
                row.complete_st = self._fire(row, row.complete_job, now)
            if (
                row.complete_st == "2"
                and row.success_st == ""
                and row.pending == 0
                and all(c.success_st == "2" for c in children)
            ):
                row.success_st = self._fire(row, row.success_job, now)
        self.store.save_batch(row)
        if row.parent and (row.complete_st, row.success_st) != before:
            parent = self.store.batch(row.parent)
            if parent is not None:
                self._settle(parent, now)

    def _fire(self, row: BatchRow, payload: bytes | None, now: int) -> str:
        """Push a callback: state "1"; no callback at all counts as finished, "2"."""
        if payload is None:
            return "2"
        job = job_decoder.decode(payload)
        job.jid = jobs.new_jid()
        try:
            self.push(job, now)
        except CommandError as exc:
            log.error("batch %s: callback %s not pushed: %s", row.bid, job.jobtype, exc.message)
            return "2"
        return "1"

    def purge(self, now: int) -> int:
        """Forget abandoned open batches and long-finished ones."""
        purged = self.store.purge_batches(now - OPEN_TTL_NS, now - DONE_TTL_NS)
        if purged:
            self.open_count, self.committed_count = self.store.batch_counts()
        return purged


def _callback_payload(spec: dict[str, Any] | None, bid: str, kind: str) -> bytes | None:
    """The callback job as stored: validated shape, marked with its batch role."""
    if spec is None:
        return None
    try:
        job = job_decoder.decode(encode(spec))
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid {kind} callback: {exc}") from None
    if not job.jobtype:
        raise CommandError(f"invalid {kind} callback: jobs must have a jobtype parameter")
    if job.args is None:
        job.args = []
    job.custom = {**(job.custom or {}), "_bid": bid, "_cb": kind}
    return encode(job)

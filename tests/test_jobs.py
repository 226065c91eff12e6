"""Job rules: validation order and texts, defaults, timing, failure records, globs."""

from __future__ import annotations

import msgspec
import pytest

from minifaktory import jobs
from minifaktory.clock import NS, format_ns, parse_ns
from minifaktory.errors import CommandError
from minifaktory.payloads import Job, encode, go_float, job_decoder

NOW = parse_ns("2026-07-01T10:00:00Z")


def make(**fields: object) -> Job:
    body: dict[str, object] = {"jid": "12345678", "jobtype": "T", "args": []}
    body.update(fields)
    return job_decoder.decode(msgspec.json.encode(body))


def test_defaults() -> None:
    job = make()
    assert jobs.prepare_push(job, NOW) is None
    assert (job.retry, job.queue, job.created_at) == (25, "default", "2026-07-01T10:00:00Z")
    assert make(retry=None).retry is None
    nulled = make(retry=None)
    jobs.prepare_push(nulled, NOW)
    assert nulled.retry == 25


def test_validation_order() -> None:
    with pytest.raises(CommandError, match="jid"):
        jobs.prepare_push(make(jid="1234567", jobtype="", args=None, reserve_for=10**6), NOW)
    with pytest.raises(CommandError, match="jobtype"):
        jobs.prepare_push(make(jobtype="", args=None, reserve_for=10**6), NOW)
    with pytest.raises(CommandError, match="args"):
        jobs.prepare_push(make(args=None, reserve_for=10**6), NOW)
    with pytest.raises(CommandError, match="one day"):
        jobs.prepare_push(make(reserve_for=86_401, at="nope"), NOW)
    with pytest.raises(CommandError, match="'at'"):
        jobs.prepare_push(make(at="nope", queue="bad name"), NOW)


def test_scheduled_and_queue_names() -> None:
    assert jobs.prepare_push(make(at=format_ns(NOW + NS)), NOW) == NOW + NS
    assert jobs.prepare_push(make(at=format_ns(NOW)), NOW) is None
    # Faktory would accept this and lose the job later; minifaktory refuses it at PUSH.
    with pytest.raises(CommandError, match="queue names must match"):
        jobs.prepare_push(make(at=format_ns(NOW + NS), queue="c&c"), NOW)
    for good in ["A-Za-z0-9_.-", "-", "a"]:
        jobs.check_queue_name(good)
    for bad in ["default?page=1", "user@example.com", "c&c", "priority|high", "é"]:
        with pytest.raises(CommandError):
            jobs.check_queue_name(bad)
    with pytest.raises(CommandError, match="queue name cannot be blank"):
        jobs.check_queue_name("")


def test_empty_custom_is_omitted() -> None:
    job = make(custom={})
    jobs.prepare_push(job, NOW)
    assert b"custom" not in encode(job)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (0, 1800),
        (-5, 60),
        (1, 60),
        (59, 60),
        (60, 60),
        (3600, 3600),
        (86_400, 86_400),
        (90_000, 86_400),
    ],
)
def test_reservation_seconds(given: int, seconds: int) -> None:
    assert jobs.reservation_seconds(given) == seconds


def test_retry_delay_bounds() -> None:
    assert jobs.retry_delay_seconds(0, lambda n: 0) == 15
    assert jobs.retry_delay_seconds(0, lambda n: n - 1) == 44
    assert jobs.retry_delay_seconds(1, lambda n: n - 1) == 16 + 58
    assert jobs.retry_delay_seconds(10, lambda n: 0) == 10_015
    assert jobs.retry_delay_seconds(24, lambda n: n - 1) == 331_776 + 15 + 29 * 25
    for count in range(25):
        assert count**4 + 15 <= jobs.retry_delay_seconds(count) <= count**4 + 15 + 29 * (count + 1)


def test_record_failure_first_and_later() -> None:
    job = make(retry=3)
    jobs.record_failure(job, " Err ", "  boom ", None, NOW)
    failure = job.failure
    assert failure is not None
    assert (failure.retry_count, failure.remaining, failure.errtype, failure.message) == (
        0,
        3,
        "Err",
        "boom",
    )
    assert failure.failed_at == "2026-07-01T10:00:00Z"
    jobs.record_failure(job, "", "", ["a"] * 60, NOW + NS)
    assert (failure.retry_count, failure.remaining) == (1, 2)
    assert (failure.errtype, failure.message) == ("unknown", "unknown")
    assert failure.backtrace == ["a"] * 50
    assert failure.failed_at == "2026-07-01T10:00:00Z"
    assert jobs.failure_outcome(job) == "retry"


def test_failure_truncation_is_utf8_safe() -> None:
    job = make()
    jobs.record_failure(job, "é" * 100, "€" * 500, [], NOW)
    assert job.failure is not None
    assert isinstance(job.failure.errtype, str) and len(job.failure.errtype.encode()) <= 100
    assert isinstance(job.failure.message, str) and len(job.failure.message.encode()) <= 1000


@pytest.mark.parametrize(
    ("retry", "failures", "outcome"),
    [
        (0, 1, "discard"),
        (-1, 1, "dead"),
        (1, 1, "retry"),
        (1, 2, "dead"),
        (25, 25, "retry"),
        (25, 26, "dead"),
    ],
)
def test_failure_outcome(retry: int, failures: int, outcome: str) -> None:
    job = make(retry=retry)
    for _ in range(failures):
        jobs.record_failure(job, "E", "m", None, NOW)
    assert jobs.failure_outcome(job) == outcome


def test_failure_serialisation_order() -> None:
    job = make(retry=2)
    jobs.prepare_push(job, NOW)
    jobs.record_failure(job, "E", "m", ["l1"], NOW)
    assert job.failure is not None
    job.failure.next_at = format_ns(NOW + 15 * NS)
    text = encode(job).decode()
    assert text.startswith(
        '{"retry":2,"failure":{"failed_at":"2026-07-01T10:00:00Z",'
        '"next_at":"2026-07-01T10:00:15Z","message":"m","errtype":"E",'
        '"backtrace":["l1"],"retry_count":0,"remaining":2},"jid":'
    )


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*", "", True),
        ("*uid:67123*", 'x"truid:67123"', True),
        ("*uid:67123*", "uid:6712", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("[abc]x", "bx", True),
        ("[^abc]x", "bx", False),
        ("[a-c]x", "bx", True),
        ("[c-a]x", "bx", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("*.json", "a.json", True),
        ("a*", "a\nb", True),
        ("[]", "x", False),
    ],
)
def test_redis_glob(pattern: str, text: str, matches: bool) -> None:
    assert bool(jobs.redis_glob(pattern).fullmatch(text)) is matches


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, b"0"),
        (2.0, b"2"),
        (0.32, b"0.32"),
        (1.5e-05, b"0.000015"),
        (1e-7, b"1e-7"),
        (1e21, b"1e+21"),
        (-3.25, b"-3.25"),
    ],
)
def test_go_float(value: float, text: bytes) -> None:
    assert encode(go_float(value)) == text

"""Timestamps in Go's RFC3339Nano form."""

from __future__ import annotations

import pytest

from minifaktory.clock import NS, FakeClock, format_ns, parse_ns, utc_clock_text, utc_date


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-07-01T10:00:00.5Z", 1782900000 * NS + 500_000_000),
        ("2026-07-01T10:00:00.123456789Z", 1782900000 * NS + 123_456_789),
        ("2026-07-01T12:00:00+02:00", 1782900000 * NS),
        ("2026-07-01T09:30:00-00:30", 1782900000 * NS),
        ("2026-07-01t10:00:00.1234567891z", 1782900000 * NS + 123_456_789),
    ],
)
def test_parse(text: str, ns: int) -> None:
    assert parse_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "invalid time",
        "2026-07-01",
        "2026-13-01T00:00:00Z",
        "2026-07-01T10:00:00",
        "2026-07-01 10:00:00Z",
        "2026-07-01T25:00:00Z",
        "2026-02-30T00:00:00Z",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="parsing time"):
        parse_ns(text)


def test_format_trims_trailing_zeros() -> None:
    base = 1782900000 * NS
    assert format_ns(base) == "2026-07-01T10:00:00Z"
    assert format_ns(base + 500_000_000) == "2026-07-01T10:00:00.5Z"
    assert format_ns(base + 1) == "2026-07-01T10:00:00.000000001Z"
    assert parse_ns(format_ns(base + 123_400)) == base + 123_400


def test_helpers() -> None:
    base = 1782900000 * NS
    assert utc_date(base) == "2026-07-01"
    assert utc_clock_text(base) == "10:00:00 UTC"
    clock = FakeClock(base)
    clock.advance(1.5)
    assert clock.now_ns() == base + 1_500_000_000

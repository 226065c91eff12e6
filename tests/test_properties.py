"""Property tests: arbitrary input to every parser fails only with our own errors.

* the framing (``LineReader``/``parse_command``) against a model, at every chunking;
* the client's ``ReplyReader`` on encoded reply streams and on garbage;
* every payload decoder a command handler uses, then the job rules the broker applies;
* MUTATE's Redis globs, ``[[cron]]`` entries and their firing times, and the
  ``[throttles]`` / ``[workers]`` / ``[statsd]`` tables;
* a live server answering arbitrary command lines exactly once each.

Each section ends with the inputs that once broke a parser, kept as regression tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import minifaktory
from minifaktory import commands, jobs, options
from minifaktory.app import RunningServer
from minifaktory.batches import _callback_payload, batch_new_decoder
from minifaktory.cron import MACROS, parse_cron
from minifaktory.errors import CommandError, ConfigError, MinifaktoryError
from minifaktory.limits import parse_limits
from minifaktory.metrics import parse_statsd
from minifaktory.payloads import (
    Job,
    beat_decoder,
    decode_error_text,
    decode_job,
    decode_jobs,
    decode_lenient,
    encode,
    fail_decoder,
    hello_decoder,
    job_decoder,
    mutate_decoder,
    track_set_decoder,
)
from minifaktory.protocol import (
    OVERLONG,
    Command,
    LineReader,
    Reply,
    ReplyReader,
    bulk,
    parse_command,
)
from minifaktory.throttles import parse_throttles
from tests.conftest import WireClient

NS = 1_000_000_000

# -- shared strategies -----------------------------------------------------------------

#: JSON scalars, integers past float's range included.
json_scalars: SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.integers(min_value=2**1024, max_value=2**1100)  # past float's range
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values: SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def _rfc3339(
    year: int, month: int, day: int, hms: tuple[int, int, int], frac: str, zone: str
) -> str:
    h, m, s = hms
    return f"{year:04d}-{month:02d}-{day:02d}T{h:02d}:{m:02d}:{s:02d}{frac}{zone}"


#: Timestamps in and around RFC3339: odd fields, fractions, offsets, years 0 and 9999.
timestamps: SearchStrategy[str] = st.builds(
    _rfc3339,
    st.sampled_from([0, 1, 1677, 1970, 2000, 2024, 2262, 2263, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.tuples(st.integers(0, 24), st.integers(0, 60), st.integers(0, 61)),
    st.sampled_from(["", ".5", ".123456789", ".1234567891234", "."]),
    st.sampled_from(["Z", "z", "+00:00", "-23:59", "+99:99", "", "+0100"]),
) | st.text(max_size=12)
durations: SearchStrategy[Any] = st.sampled_from(
    ["1h30m", "250ms", ".5s", "1.s", "-1s", "0", "1e5s", "1µs", "2h", "", "s", "1h1", "+3m", " 5s "]
) | st.floats(allow_nan=False, allow_infinity=False)
queue_names = st.sampled_from(["default", "a", "critical", "", "bad name", "x" * 300, "é", "*"])
custom_objects: SearchStrategy[Any] = st.fixed_dictionaries(
    {},
    optional={
        "unique_for": st.integers(-5, 10**12) | durations | json_values,
        "unique_until": st.sampled_from(["success", "start", "", "later"]) | json_values,
        "expires_at": timestamps | json_values,
        "expires_in": durations | st.integers(-5, 10**12) | json_values,
        "track": st.sampled_from([1, 1.0, True, 0, "1"]),
        "_bid": st.text(max_size=8),
    },
)
#: Mostly well-formed jobs, so that the rules after the early checks run too.
job_objects: SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "jid": st.text(min_size=8, max_size=24) | st.text(max_size=7) | json_values,
        "jobtype": st.text(min_size=1, max_size=10) | json_values,
        "args": st.lists(json_values, max_size=3) | json_values,
    },
    optional={
        "queue": queue_names | json_values,
        "retry": st.integers(-3, 30) | st.none() | json_values,
        "reserve_for": st.integers(-10, 10**6) | json_values,
        "at": timestamps | json_values,
        "created_at": timestamps,
        "priority": st.integers(-2, 12) | json_values,
        "custom": custom_objects | json_values,
        "failure": st.fixed_dictionaries(
            {}, optional={"retry_count": st.integers(-2, 40), "message": st.text(max_size=5)}
        )
        | json_values,
        "backtrace": st.integers(-1, 60) | json_values,
    },
)
#: Jobs whose fields all have the right JSON types: the rules, not the decoder, judge them.
well_typed_jobs: SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "jid": st.text(min_size=8, max_size=24) | st.text(max_size=8),
        "jobtype": st.text(max_size=10),
        "args": st.lists(json_values, max_size=3),
    },
    optional={
        "queue": queue_names | st.text(max_size=8),
        "retry": st.integers(-3, 30) | st.none(),
        "reserve_for": st.integers(-10, 10**5),
        "at": timestamps,
        "created_at": timestamps,
        "priority": st.integers(-2, 12),
        "custom": custom_objects,
        "failure": st.fixed_dictionaries(
            {}, optional={"retry_count": st.integers(-2, 40), "next_at": timestamps}
        ),
        "backtrace": st.integers(-1, 60),
    },
)
payload_values: SearchStrategy[Any] = (
    json_values | job_objects | st.lists(job_objects, max_size=3) | custom_objects
)


# -- 1. the framing: LineReader and parse_command --------------------------------------


def model_lines(data: bytes, max_line: int) -> list[object]:
    """What LineReader must produce for ``data``, however it is chunked."""
    *complete, tail = data.split(b"\n")
    out: list[object] = []
    for line in complete:
        body = line.removesuffix(b"\r")
        out.append(OVERLONG if len(body) > max_line else body)
    if len(tail) > max_line + 1:  # reported once, before its newline arrives
        out.append(OVERLONG)
    return out


def feed_chunks(reader: LineReader, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        out += reader.feed(data[last:cut])
        last = cut
    return out


wire_pieces = st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"INFO", b"PUSH {}", b"\xff"])
streams: SearchStrategy[bytes] = st.lists(
    wire_pieces | st.binary(max_size=24) | st.integers(0, 90).map(lambda n: b"x" * n),
    max_size=30,
).map(b"".join)


@settings(max_examples=300)
@given(data=st.data(), stream=streams, max_line=st.integers(1, 40))
def test_lines_match_the_model_at_every_chunking(
    data: st.DataObject, stream: bytes, max_line: int
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    reader = LineReader(max_line)
    lines = feed_chunks(reader, stream, cuts)
    assert lines == model_lines(stream, max_line)
    assert lines == feed_chunks(LineReader(max_line), stream, [])
    assert reader.buffered <= max_line + 1
    for line in lines:
        if line is OVERLONG:
            continue
        assert type(line) is bytes
        cmd = parse_command(line)
        assert type(cmd) is Command and type(cmd.verb) is str and " " not in cmd.verb
        verb, sep, payload = line.partition(b" ")
        assert cmd.verb == verb.decode("utf-8", "replace")
        assert cmd.payload == (payload if sep else None)
        assert type(cmd.payload) in (bytes, type(None)) and type(cmd.text) is str


plain_lines = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b".").replace(b"\r", b"."))


@settings(max_examples=200)
@given(
    data=st.data(),
    max_line=st.integers(1, 40),
    excess=st.integers(1, 200),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    before=st.lists(plain_lines, max_size=3),
    after=st.lists(plain_lines, min_size=1, max_size=3),
)
def test_overlong_line_is_reported_once_and_the_reader_recovers(
    data: st.DataObject,
    max_line: int,
    excess: int,
    ending: bytes,
    before: list[bytes],
    after: list[bytes],
) -> None:
    before = [line[:max_line] for line in before]
    after = [line[:max_line] for line in after]
    stream = b"".join(line + b"\r\n" for line in before)
    stream += b"y" * (max_line + excess) + ending
    stream += b"".join(line + b"\n" for line in after)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    reader = LineReader(max_line)
    assert feed_chunks(reader, stream, cuts) == [*before, OVERLONG, *after]
    assert reader.buffered == 0


# -- 2. the client's ReplyReader ----------------------------------------------------------

simple_bodies = st.binary(max_size=24).filter(lambda b: b"\r\n" not in b)
bulk_bodies = st.lists(
    st.sampled_from([b"\r\n", b"\r", b"\n", b"$-1", b"+OK", b"$3", b"-ERR x"])
    | st.binary(max_size=12),
    max_size=6,
).map(b"".join)
replies: SearchStrategy[Reply] = st.one_of(
    st.builds(Reply, st.just("+"), simple_bodies),
    st.builds(Reply, st.just("-"), simple_bodies),
    st.builds(Reply, st.just("$"), bulk_bodies),
    st.just(Reply("$", None)),
)


def encode_reply(reply: Reply) -> bytes:
    if reply.data is None:
        return b"$-1\r\n"
    if reply.kind == "$":
        return bulk(reply.data)
    return reply.kind.encode() + reply.data + b"\r\n"


@settings(max_examples=300)
@given(data=st.data(), sent=st.lists(replies, max_size=12))
def test_reply_reader_returns_exactly_the_replies_at_every_chunking(
    data: st.DataObject, sent: list[Reply]
) -> None:
    wire = b"".join(map(encode_reply, sent))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    reader = ReplyReader()
    got: list[Reply] = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += reader.feed(wire[last:cut])
        last = cut
    assert got == sent
    # A stream cut short yields a prefix of the replies and no error.
    end = data.draw(st.integers(0, len(wire)))
    partial = ReplyReader().feed(wire[:end])
    assert partial == sent[: len(partial)]


@settings(max_examples=300)
@given(
    chunks=st.lists(
        st.binary(max_size=40)
        | replies.map(encode_reply)
        | st.sampled_from([b"$", b"$-", b"\r\n"]),
        max_size=12,
    )
)
def test_reply_reader_on_garbage_returns_replies_or_raises_value_error(
    chunks: list[bytes],
) -> None:
    reader = ReplyReader()
    try:
        for chunk in chunks:
            for reply in reader.feed(chunk):
                assert type(reply) is Reply and reply.kind in ("+", "-", "$")
                assert reply.data is None or type(reply.data) is bytes
                assert reply.data is not None or reply.kind == "$"
    except ValueError:
        pass


# -- 3. payload decoders and job rules ---------------------------------------------------


def _decode_ack(data: bytes) -> object:
    return commands._jid_of(Command("ACK", data))


def _decode_mutate(data: bytes) -> object:
    op = decode_lenient(mutate_decoder, data)
    if op.filter is not None and op.filter.regexp:
        jobs.redis_glob(op.filter.regexp)
    return op


def _decode_batch_new(data: bytes) -> object:
    spec = decode_lenient(batch_new_decoder, data)
    _callback_payload(spec.success, "b-1", "success")
    _callback_payload(spec.complete, "b-1", "complete")
    return spec


#: Each decoder as the handler (or the handshake) runs it, with what follows the decode.
DECODERS: dict[str, Callable[[bytes], object]] = {
    "PUSH": decode_job,
    "PUSHB": decode_jobs,
    "HELLO": lambda data: decode_lenient(hello_decoder, data),
    "ACK": _decode_ack,
    "FAIL": lambda data: decode_lenient(fail_decoder, data),
    "BEAT": lambda data: decode_lenient(beat_decoder, data),
    "MUTATE": _decode_mutate,
    "TRACK SET": lambda data: decode_lenient(track_set_decoder, data),
    "BATCH NEW": _decode_batch_new,
}


def decode_like_a_handler(name: str, data: bytes) -> None:
    """Run one decoder; only msgspec's decode errors and our own errors may escape."""
    texts: list[object] = []
    try:
        DECODERS[name](data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        # Handlers phrase the error for the client with this: it must not fail either.
        texts = [decode_error_text(exc, data), decode_error_text(exc, data, "Operation")]
    except MinifaktoryError:
        pass
    assert all(type(text) is str for text in texts)


def _mangled(text: bytes, data: st.DataObject) -> bytes:
    if not text:
        return text
    where = data.draw(st.integers(0, len(text) - 1))
    how = data.draw(st.sampled_from(["cut", "replace", "insert"]))
    if how == "cut":
        return text[:where]
    byte = data.draw(st.binary(min_size=1, max_size=2))
    skip = 1 if how == "replace" else 0
    return text[:where] + byte + text[where + skip :]


@settings(max_examples=400)
@given(name=st.sampled_from(sorted(DECODERS)), data=st.binary(max_size=120))
def test_decoders_on_arbitrary_bytes(name: str, data: bytes) -> None:
    decode_like_a_handler(name, data)


@settings(max_examples=400)
@given(name=st.sampled_from(sorted(DECODERS)), value=payload_values, data=st.data())
def test_decoders_on_arbitrary_json(name: str, value: Any, data: st.DataObject) -> None:
    text = json.dumps(value).encode()
    decode_like_a_handler(name, text)
    decode_like_a_handler(name, _mangled(text, data))


@settings(max_examples=400)
@given(value=well_typed_jobs | job_objects | json_values, now=st.integers(0, 2**62))
def test_job_rules_raise_only_command_errors(value: Any, now: int) -> None:
    try:
        job = decode_job(json.dumps(value).encode())
    except msgspec.DecodeError:
        return
    try:  # as the broker calls them (state._push)
        at = jobs.prepare_push(job, now)
        opts = options.parse_options(job, now, at)
    except CommandError:
        return
    assert job.retry is not None and job.created_at and len(job.jid) >= 8
    jobs.check_queue_name(job.queue)
    assert at is None or at > now
    assert options.MIN_PRIORITY <= opts.priority <= options.MAX_PRIORITY
    assert opts.unique is None or opts.unique.ttl_ns >= 0
    # What the broker stores is what FETCH hands to workers: it must decode to the same job.
    assert job_decoder.decode(encode(job)) == job


def test_every_payload_command_has_a_decoder_here() -> None:
    json_verbs = {"PUSH", "PUSHB", "ACK", "REQUEUE", "FAIL", "BEAT", "MUTATE", "BATCH", "TRACK"}
    assert json_verbs <= set(commands.COMMANDS)
    covered = {name.split()[0] for name in DECODERS} | {"REQUEUE"}  # REQUEUE shares ACK's
    assert json_verbs <= covered


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize("name", sorted(set(DECODERS) - {"ACK"}))
def test_deeply_nested_json_is_refused_as_a_decode_error(name: str) -> None:
    payload = b'{"args":' + DEEP + b"}"
    decode_like_a_handler(name, b"[" + payload + b"]" if name == "PUSHB" else payload)


#: The smallest payload per decoder: one string field holding the byte 0x80.
BAD_UTF8 = {"PUSH": b'{"jid":"\x80"}', "PUSHB": b'[{"jid":"\x80"}]', "HELLO": b'{"wid":"\x80"}',
            "ACK": b'{"jid":"\x80"}', "FAIL": b'{"jid":"\x80"}', "BEAT": b'{"wid":"\x80"}',
            "MUTATE": b'{"cmd":"\x80"}', "TRACK SET": b'{"jid":"\x80"}',
            "BATCH NEW": b'{"description":"\x80"}'}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_UTF8))
def test_invalid_utf8_in_a_string_becomes_the_replacement_character(name: str) -> None:
    with contextlib.suppress(msgspec.DecodeError, MinifaktoryError):
        DECODERS[name](BAD_UTF8[name])
    assert decode_job(BAD_UTF8["PUSH"]).jid == "\ufffd"  # as Go's encoding/json does


@pytest.mark.parametrize("field", ["unique_for", "expires_in"])
def test_a_huge_integer_option_is_a_command_error(field: str) -> None:
    job = Job(jid="12345678", jobtype="J", args=[], custom={field: 10**309})
    with contextlib.suppress(CommandError):
        options.parse_options(job, 0, jobs.prepare_push(job, 0))


# -- 4. MUTATE globs ------------------------------------------------------------------------

GLOB_SPECIALS = "*?[\\"
glob_text = st.text(alphabet=st.sampled_from("*?[]^-\\ab.z"), max_size=16) | st.text(max_size=24)
literal_text = st.text(max_size=24).filter(lambda s: not any(c in GLOB_SPECIALS for c in s))


@settings(max_examples=400)
@given(pattern=glob_text, subject=st.text(max_size=24))
def test_redis_glob_never_raises(pattern: str, subject: str) -> None:
    try:
        compiled = jobs.redis_glob(pattern)
    except MinifaktoryError:
        return
    assert isinstance(compiled, re.Pattern)
    compiled.fullmatch(subject)


@settings(max_examples=300)
@given(literal=literal_text, other=st.text(max_size=24))
def test_redis_glob_of_a_literal_matches_exactly_that_literal(literal: str, other: str) -> None:
    pattern = jobs.redis_glob(literal)
    assert pattern.fullmatch(literal)
    assert bool(pattern.fullmatch(other)) == (other == literal)
    assert not pattern.fullmatch(literal + "\n") and not pattern.fullmatch("\n" + literal)


@settings(max_examples=300)
@given(text=st.text(max_size=24), other=st.text(max_size=24))
def test_redis_glob_escapes_and_wildcards(text: str, other: str) -> None:
    escaped = "".join("\\" + c for c in text)
    assert jobs.redis_glob(escaped).fullmatch(text)
    assert bool(jobs.redis_glob(escaped).fullmatch(other)) == (other == text)
    assert jobs.redis_glob("*").fullmatch(text + "\n" + other)
    assert jobs.redis_glob(escaped + "*").fullmatch(text + other)
    assert bool(jobs.redis_glob("?" * len(text)).fullmatch(other)) == (len(other) == len(text))


@settings(max_examples=200)
@given(
    members=st.text(alphabet="abcdefgh0123", min_size=1, max_size=5),
    negate=st.booleans(),
    char=st.sampled_from("abcdefgh0123xyz-^]"),
)
def test_redis_glob_character_classes(members: str, negate: bool, char: str) -> None:
    pattern = jobs.redis_glob(f"[{'^' if negate else ''}{members}]")
    assert bool(pattern.fullmatch(char)) == ((char in members) != negate)


def _glob_reference(pattern: str, text: str) -> bool:
    """Redis's stringmatchlen for ``*``, ``?``, literals and ``\\x`` (no classes), by
    dynamic programming: the model the regex translation is checked against."""
    tokens: list[str | None] = []  # None is a star; "?" is any character
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            i += 1
            tokens.append("\\" + pattern[i])
        else:
            tokens.append(None if ch == "*" else ch)
        i += 1
    ok = [True] + [False] * len(text)  # ok[j]: the tokens so far match text[:j]
    for token in tokens:
        if token is None:
            for j in range(1, len(text) + 1):
                ok[j] = ok[j] or ok[j - 1]
            continue
        new = [False] * (len(text) + 1)
        for j in range(1, len(text) + 1):
            char = token[-1] if token.startswith("\\") and len(token) == 2 else token
            new[j] = ok[j - 1] and (token == "?" or text[j - 1] == char)
        ok = new
    return ok[len(text)]


@settings(max_examples=500)
@given(
    pattern=st.text(alphabet=st.sampled_from("*?\\ab"), max_size=14),
    text=st.text(alphabet="ab*?\\", max_size=14),
)
def test_redis_glob_agrees_with_a_reference_matcher(pattern: str, text: str) -> None:
    assert bool(jobs.redis_glob(pattern).fullmatch(text)) == _glob_reference(pattern, text)


# -- 5. cron entries --------------------------------------------------------------------------


def _cron_field(lo: int, hi: int) -> SearchStrategy[str]:
    number = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        number.map(str),
        st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.integers(1, hi).map(lambda step: f"*/{step}"),
        st.lists(number, min_size=2, max_size=3, unique=True).map(
            lambda ns: ",".join(map(str, ns))
        ),
    )


#: Day of month 1-28 so that every schedule fires (see the February 30 bug below).
CALENDAR = [_cron_field(0, 59), _cron_field(0, 23), _cron_field(1, 28), _cron_field(1, 12),
            _cron_field(0, 6)]  # fmt: skip
every_schedules = st.builds(
    lambda n, unit, rest: f"@every {n}{unit}{rest}",
    st.integers(1, 800_000),  # 800,000 h is 91 years: under the 100-year limit
    st.sampled_from(["s", "m", "h"]),
    st.sampled_from(["", "30m", "15s", "500ms"]),
)
valid_schedules: SearchStrategy[str] = st.one_of(
    st.tuples(*CALENDAR).map(" ".join),
    st.tuples(_cron_field(0, 59), *CALENDAR).map(" ".join),
    every_schedules,
    st.sampled_from(sorted(MACROS)),
)
VALID_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
               "Asia/Kolkata", "Pacific/Chatham", "America/St_Johns", "Europe/London"]  # fmt: skip
schedules: SearchStrategy[Any] = st.one_of(
    valid_schedules,
    st.tuples(
        _cron_field(0, 99),
        _cron_field(0, 99),
        _cron_field(0, 40),
        _cron_field(0, 13),
        _cron_field(0, 9),
    ).map(" ".join),
    st.sampled_from(
        [
            "@every",
            "@every 0s",
            "@every 10ms",
            "@every -5s",
            "@every x",
            "@often",
            "* * * *",
            "* * * * * * *",
            "",
            "  ",
            "0 0 31 4 *",
        ]
    ),
    st.text(max_size=24),
    json_values,
)
zones: SearchStrategy[Any] = (
    st.sampled_from(VALID_ZONES)
    | st.sampled_from(["Mars/Base", "", "../etc/passwd", "UTC/", "/etc/localtime", "a\x00b", "utc"])
    | st.text(max_size=16)
    | json_values
)
cron_jobs: SearchStrategy[Any] = (
    st.fixed_dictionaries(
        {"type": st.sampled_from(["J", "Report"]) | st.text(max_size=6) | json_values},
        optional={
            "queue": queue_names | json_values,
            "args": st.lists(json_values, max_size=3) | json_values,
            "retry": st.integers(-2, 30) | json_values,
            "reserve_for": st.integers(-10, 10**6) | json_values,
            "custom": custom_objects | json_values,
            "kind": json_values,
        },
    )
    | json_values
)
cron_entries: SearchStrategy[Any] = st.one_of(
    st.fixed_dictionaries({"schedule": schedules, "job": cron_jobs}, optional={"timezone": zones}),
    st.fixed_dictionaries(
        {"schedule": valid_schedules, "job": st.fixed_dictionaries({"type": st.just("J")})},
        optional={"timezone": zones},
    ),
    st.fixed_dictionaries(
        {}, optional={"schedule": schedules, "job": cron_jobs, "every": json_values}
    ),
    json_values,
)
cron_documents: SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"cron": st.lists(cron_entries, min_size=1, max_size=3) | json_values},
    optional={"cron_settings": st.fixed_dictionaries({"timezone": zones}) | json_values},
)


@settings(max_examples=300, deadline=None)
@given(document=cron_documents, sources=st.lists(st.text(max_size=6), max_size=3))
def test_parse_cron_raises_only_config_errors(document: dict[str, Any], sources: list[str]) -> None:
    try:
        entries = parse_cron(document, sources)
    except ConfigError:
        return
    for entry in entries:
        assert entry.job["type"] and type(entry.key) is str
        assert (entry.every_ns is None) != (entry.expression == "")
        assert entry.every_ns is None or entry.every_ns >= NS


MS = 1_000_000


@settings(max_examples=300, deadline=None)
@given(
    schedule=valid_schedules,
    zone=st.sampled_from(VALID_ZONES),
    now_ms=st.integers(946_684_800_000, 4_102_444_800_000),  # 2000 to 2100
    gap_ms=st.integers(0, 400 * 86_400_000) | st.integers(0, 90_000),
    jitter=st.integers(0, MS - 1),
)
def test_valid_cron_entries_fire_after_and_between(
    schedule: str, zone: str, now_ms: int, gap_ms: int, jitter: int
) -> None:
    (entry,) = parse_cron(
        {"cron": [{"schedule": schedule, "timezone": zone, "job": {"type": "J"}}]}
    )
    now, last = now_ms * MS + jitter, (now_ms - gap_ms) * MS
    nxt = entry.next_after(last)
    assert nxt > last
    due = entry.latest_due(now, last)
    assert due is None or last < due <= now
    # Consistent with each other: something is due exactly when the next firing is not late,
    # and what is due is the latest firing up to now.
    assert (due is None) == (nxt > now)
    if due is not None:
        assert nxt <= due
        assert entry.next_after(due) > now


def test_next_after_just_before_a_firing_is_that_firing() -> None:
    (entry,) = parse_cron({"cron": [{"schedule": "* * * * *", "job": {"type": "J"}}]})
    firing = 1_700_000_040 * NS
    assert entry.next_after(firing - 1) == firing


@pytest.mark.parametrize("schedule", ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 30 2 *"])
def test_a_schedule_that_never_fires_is_refused(schedule: str) -> None:
    document = {"cron": [{"schedule": schedule, "job": {"type": "J"}}]}
    try:
        (entry,) = parse_cron(document)
    except ConfigError:
        return
    entry.next_after(1_700_000_000 * NS)
    entry.latest_due(1_700_000_000 * NS, 1_600_000_000 * NS)


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(
            {"schedule": "@hourly", "timezone": "America", "job": {"type": "J"}},
            id="zone-is-a-directory",
        ),
        pytest.param(
            {"schedule": "@hourly", "timezone": "x" * 300, "job": {"type": "J"}},
            id="zone-name-too-long",
        ),
        pytest.param(
            {"schedule": "@every 1" + "0" * 309 + "s", "job": {"type": "J"}},
            id="every-overflows",
        ),
    ],
)  # fmt: skip
def test_cron_entries_fail_only_with_config_error(entry: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_cron({"cron": [entry]})


# -- 6. conf.d tables ---------------------------------------------------------------------

#: TOML values, infinities and NaN included.
toml_scalars: SearchStrategy[Any] = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()  # TOML has inf and nan too
    | st.text(max_size=12)
)
toml_values: SearchStrategy[Any] = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
numbers: SearchStrategy[Any] = st.one_of(
    st.integers(1, 10**6), st.integers(-5, 10**9), st.floats(),
    toml_values,
)  # fmt: skip
table_names = (
    st.sampled_from(["default", "a", "critical", "q.1", "x-y_z"])
    | queue_names
    | st.text(max_size=8)
)


def _tables(entries: dict[str, SearchStrategy[Any]]) -> SearchStrategy[Any]:
    """A table with some of the given keys, sometimes junk as well, or anything at all."""
    return st.one_of(
        st.fixed_dictionaries({}, optional=entries),
        st.fixed_dictionaries(entries),
        st.fixed_dictionaries(entries),
        st.fixed_dictionaries({"junk": toml_values}, optional=entries),
        toml_values,
    )


throttle_documents = st.fixed_dictionaries(
    {},
    optional={
        "throttles": st.dictionaries(
            table_names,
            st.one_of(
                _tables({"concurrency": numbers, "timeout": numbers}),
                _tables({"worker": numbers, "timeout": numbers}),
                _tables({"concurrency": numbers, "worker": numbers, "timeout": numbers}),
            ),
            min_size=1,
            max_size=3,
        )
        | st.dictionaries(table_names, toml_values, max_size=2)
        | toml_values
    },
)
good_names = st.sampled_from(["default", "a", "critical", "q.1", "x-y_z"])
positive = st.integers(1, 10**6) | st.floats(1e-3, 1e6)
#: Well-formed tables, so that the success paths are reached often too.
good_throttles = st.fixed_dictionaries(
    {
        "throttles": st.dictionaries(
            good_names,
            st.fixed_dictionaries({"concurrency": st.integers(1, 50), "timeout": positive})
            | st.fixed_dictionaries({"worker": st.integers(1, 50), "timeout": positive}),
            max_size=3,
        )
    }
)
limit_documents = st.fixed_dictionaries(
    {},
    optional={
        "workers": _tables(
            {
                "max_rss_mb": numbers,
                "max_job_runtime": numbers,
                "queues": st.dictionaries(table_names, _tables({"max_job_runtime": numbers})),
                "jobtypes": st.dictionaries(table_names, _tables({"max_job_runtime": numbers})),
            }
        )
    },
)
tags = st.lists(
    st.sampled_from(["env:prod", "a", "host:x", "9a", "a b", "team:x/y", "service:s", ""])
    | st.text(max_size=8),
    max_size=3,
)
locations = st.builds(
    lambda host, port: f"{host}:{port}",
    st.sampled_from(["localhost", "127.0.0.1", "[::1]", "", "[", "h:1"]),
    st.integers(-1, 70_000).map(str) | st.text(max_size=6),
) | st.text(max_size=16)
good_statsd = st.fixed_dictionaries(
    {
        "statsd": st.fixed_dictionaries(
            {"location": st.builds("{}:{}".format, good_names, st.integers(1, 65535))},
            optional={
                "namespace": st.text(max_size=6),
                "tags": st.lists(st.sampled_from(["env:prod", "team:x/y", "a.b"]), max_size=2),
                "bufferSize": st.integers(1, 1000),
                "queueLatency": st.lists(good_names, max_size=2),
            },
        )
    }
) | st.fixed_dictionaries(
    {"metrics": st.fixed_dictionaries({"enabled": st.just(True)}, optional={"tags": tags})}
)
statsd_documents = st.fixed_dictionaries(
    {},
    optional={
        "statsd": _tables(
            {
                "location": locations | toml_values,
                "namespace": st.text(max_size=6) | toml_values,
                "tags": tags | toml_values,
                "bufferSize": st.integers(-1, 1002) | toml_values,
                "queueLatency": st.lists(st.text(max_size=6), max_size=3) | toml_values,
            }
        ),
        "metrics": _tables(
            {
                "enabled": st.booleans() | toml_values,
                "namespace": st.text(max_size=6) | toml_values,
                "tags": tags | toml_values,
            }
        ),
    },
)


def _is_dict(value: object) -> bool:
    return isinstance(value, dict)


@settings(max_examples=300)
@given(document=throttle_documents | good_throttles | toml_values.filter(_is_dict))
def test_parse_throttles_raises_only_config_errors(document: dict[str, Any]) -> None:
    try:
        throttles = parse_throttles(document)
    except ConfigError:
        return
    for name, throttle in throttles.items():
        jobs.check_queue_name(name)
        assert throttle.queue == name and throttle.limit >= 1 and throttle.timeout_ns >= 0


@settings(max_examples=300)
@given(document=limit_documents | toml_values.filter(_is_dict))
def test_parse_limits_raises_only_config_errors(document: dict[str, Any]) -> None:
    try:
        limits = parse_limits(document)
    except ConfigError:
        return
    assert limits.max_rss_kb is None or limits.max_rss_kb >= 0
    assert limits.max_runtime_ns is None or limits.max_runtime_ns >= 0
    assert all(ns >= 0 for ns in [*limits.by_queue.values(), *limits.by_jobtype.values()])


@settings(max_examples=300)
@given(document=statsd_documents | good_statsd | toml_values.filter(_is_dict))
def test_parse_statsd_raises_only_config_errors(document: dict[str, Any]) -> None:
    try:
        config = parse_statsd(document, environ={})
    except ConfigError:
        return
    if config is not None:
        assert config.host and 0 < config.port < 65536
        assert 1 <= config.buffer_size <= 1000


INF, NAN = math.inf, math.nan


def _statsd(document: dict[str, Any]) -> object:
    return parse_statsd(document, environ={})


@pytest.mark.parametrize(
    ("parse", "document"),
    [
        pytest.param(parse_throttles, {"throttles": {"q": {"concurrency": 1, "timeout": INF}}},
                     id="throttle-timeout-inf"),
        pytest.param(parse_throttles, {"throttles": {"q": {"concurrency": 1, "timeout": NAN}}},
                     id="throttle-timeout-nan"),
        pytest.param(parse_throttles, {"throttles": {"q": {"concurrency": 1, "timeout": 1e300}}},
                     id="throttle-timeout-1e300"),
        pytest.param(parse_limits, {"workers": {"max_rss_mb": INF}},
                     id="rss-inf"),
        pytest.param(parse_limits, {"workers": {"max_job_runtime": NAN}},
                     id="runtime-nan"),
        pytest.param(parse_limits, {"workers": {"queues": {"q": {"max_job_runtime": 1e300}}}},
                     id="queue-runtime-1e300"),
        pytest.param(_statsd, {"statsd": {"location": "localhost:²"}},
                     id="statsd-port-superscript"),
    ],
)  # fmt: skip
def test_conf_d_tables_fail_only_with_config_error(
    parse: Callable[[dict[str, Any]], object], document: dict[str, Any]
) -> None:
    with contextlib.suppress(ConfigError):
        parse(document)


# -- 7. a live server ------------------------------------------------------------------------

MAX_LINE = 2048
REPLY_LINE = re.compile(rb"\+[^\r\n]*\r\n|-[A-Z]+ [^\r\n]*\r\n|\$-1\r\n|\$(\d+)\r\n")
WIRE_VERBS = sorted(set(commands.COMMANDS) - {"END"})  # END closes without a reply
SUBCOMMANDS = ["BATCH NEW", "BATCH OPEN", "BATCH COMMIT", "BATCH STATUS", "BATCH CHILD",
               "TRACK SET", "TRACK GET", "QUEUE PAUSE", "QUEUE RESUME", "QUEUE REMOVE",
               "QUEUE LATENCY", "FETCH default", "HELLO"]  # fmt: skip


def _not_end(line: bytes) -> bool:
    return parse_command(line.removesuffix(b"\r")).verb != "END"


verbs = (
    st.sampled_from(WIRE_VERBS)
    | st.sampled_from(SUBCOMMANDS)
    | st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=8)
)
mutations = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(["clear", "kill", "discard", "requeue", "x"]),
        "target": st.sampled_from(["retries", "scheduled", "dead", "x"]),
    },
    optional={
        "filter": st.fixed_dictionaries(
            {},
            optional={
                "jobtype": st.text(max_size=6),
                "jids": st.lists(st.text(max_size=8), max_size=2),
                "regexp": glob_text,
            },
        )
    },
)
wire_payloads = (
    (payload_values | mutations | st.fixed_dictionaries({"jid": st.text(max_size=10)})).map(
        lambda v: json.dumps(v, separators=(",", ":")).encode()
    )
    | st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" "))
    | st.lists(queue_names | st.text(max_size=5), max_size=3).map(
        lambda names: " ".join(names).replace("\n", " ").encode()
    )
)
wire_lines: SearchStrategy[bytes] = st.one_of(
    st.tuples(verbs, st.none() | wire_payloads).map(
        lambda vp: vp[0].encode() + (b"" if vp[1] is None else b" " + vp[1])
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.integers(MAX_LINE + 1, 4 * MAX_LINE).map(lambda n: b"PUSH " + b"{" * n),
).filter(_not_end)


@pytest.fixture(scope="module")
def live_server() -> Iterator[RunningServer]:
    with minifaktory.run(binding="127.0.0.1:0", fetch_timeout=0.01, max_line_bytes=MAX_LINE) as srv:
        yield srv


def read_one_reply(client: WireClient) -> bytes:
    first = client.file.readline()
    match = REPLY_LINE.fullmatch(first)
    assert match is not None, first
    if match.group(1) is None:
        return first
    body = client.file.read(int(match.group(1)) + 2)
    assert body.endswith(b"\r\n"), body
    return first + body


def test_live_server_answers_every_line_exactly_once(
    live_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(lines=st.lists(wire_lines, min_size=1, max_size=8), worker=st.booleans())
    def one_connection(lines: list[bytes], worker: bool) -> None:
        client = WireClient(live_server.host, live_server.port)
        try:
            hello = {"wid": uuid.uuid4().hex[:12]} if worker else {}
            assert client.hello(**hello) == b"+OK\r\n"
            client.sock.sendall(b"".join(line + b"\r\n" for line in lines))  # pipelined
            for _ in lines:
                read_one_reply(client)
            # One reply each and no more: the next reply is INFO's document.
            assert "faktory" in client.json("INFO")
        finally:
            client.close()

    one_connection()
    errors = [r for r in caplog.records if r.name.startswith("minifaktory")]
    assert not errors, errors[0].getMessage()

    client = WireClient(live_server.host, live_server.port)
    try:
        assert client.call("HELLO {}") == b"+OK\r\n"
        assert client.json("INFO")["server"]["description"] == "Faktory"
        jid, queue = uuid.uuid4().hex, "props-final"
        job = {"jid": jid, "jobtype": "Check", "args": [1], "queue": queue}
        assert client.call("PUSH " + json.dumps(job)) == b"+OK\r\n"
        assert client.call(f"QUEUE RESUME {queue}") == b"+OK\r\n"  # fuzzing may pause "*"
        fetched = client.json(f"FETCH {queue}")
        assert fetched["jid"] == jid and fetched["args"] == [1]
        assert client.call(f'ACK {{"jid":"{jid}"}}') == b"+OK\r\n"
    finally:
        client.close()

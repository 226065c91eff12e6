"""The sans-I/O layer: framing at every split point, commands, replies, handshake."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifaktory import protocol
from minifaktory.protocol import OVERLONG, Challenge, Command, LineReader, parse_command

SAMPLES: list[tuple[bytes, list[bytes]]] = [
    (b"HELLO {}\r\n", [b"HELLO {}"]),
    (b"INFO\n", [b"INFO"]),
    (b'PUSH {"a":1}\r\nFETCH a b\r\n', [b'PUSH {"a":1}', b"FETCH a b"]),
    (b"\r\n\n", [b"", b""]),
    (b'ACK {"jid":"x"}\r\nEND\n', [b'ACK {"jid":"x"}', b"END"]),
    (b"X\r\r\n", [b"X\r"]),
    (b"caf\xc3\xa9 \xff\r\n", [b"caf\xc3\xa9 \xff"]),
]


def feed_split(data: bytes, cuts: list[int], max_line: int = 1 << 20) -> list[object]:
    reader = LineReader(max_line)
    out: list[object] = []
    last = 0
    for cut in [*cuts, len(data)]:
        out += reader.feed(data[last:cut])
        last = cut
    return out


@pytest.mark.parametrize(("wire", "lines"), SAMPLES)
def test_every_single_split(wire: bytes, lines: list[bytes]) -> None:
    for cut in range(len(wire) + 1):
        assert feed_split(wire, [cut]) == lines


@pytest.mark.parametrize(("wire", "lines"), SAMPLES)
def test_byte_at_a_time(wire: bytes, lines: list[bytes]) -> None:
    assert feed_split(wire, list(range(1, len(wire)))) == lines


@given(st.data())
def test_every_chunking_gives_the_same_lines(data: st.DataObject) -> None:
    wire, lines = data.draw(st.sampled_from(SAMPLES))
    joined = b"".join(w for w, _ in SAMPLES)
    expected = [line for _, ls in SAMPLES for line in ls]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(joined)), max_size=20)))
    assert feed_split(joined, cuts) == expected
    assert feed_split(wire, []) == lines


def test_overlong_line_is_reported_once_and_skipped() -> None:
    reader = LineReader(8)
    assert reader.feed(b"0123456789ABCDEF") == [OVERLONG]
    assert reader.feed(b"more and more") == []
    assert reader.feed(b"tail\r\nINFO\r\n") == [b"INFO"]
    assert reader.feed(b"123456789\r\nOK\r\n") == [OVERLONG, b"OK"]
    assert reader.feed(b"12345678\r\n") == [b"12345678"]
    assert reader.buffered == 0


@given(st.lists(st.binary(max_size=64), max_size=30), st.integers(1, 64))
def test_arbitrary_bytes_never_raise(chunks: list[bytes], max_line: int) -> None:
    reader = LineReader(max_line)
    for chunk in chunks:
        for line in reader.feed(chunk):
            if line is not OVERLONG:
                assert isinstance(line, bytes)
                assert b"\n" not in line
                assert len(line) <= max_line
                parse_command(line)
    assert reader.buffered <= max_line + 1


def test_parse_command() -> None:
    assert parse_command(b"ACK") == Command("ACK", None)
    assert parse_command(b"ACK ") == Command("ACK", b"")
    assert parse_command(b'PUSH {"a": 1}') == Command("PUSH", b'{"a": 1}')
    assert parse_command(b"FETCH a  b").text == "a  b"
    assert parse_command(b"\xff\xfe x").verb == "\ufffd\ufffd"


def test_replies() -> None:
    assert protocol.simple("OK") == b"+OK\r\n"
    assert protocol.error("Invalid password") == b"-ERR Invalid password\r\n"
    assert protocol.error("Job not unique", "NOTUNIQUE") == b"-NOTUNIQUE Job not unique\r\n"
    assert protocol.error("bad\r\nline") == b"-ERR bad  line\r\n"
    assert protocol.bulk(b"{}") == b"$2\r\n{}\r\n"
    assert protocol.bulk("é".encode()) == b"$2\r\n\xc3\xa9\r\n"


def test_password_vector() -> None:
    expected = "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    assert protocol.pwdhash("foobar", "55104dc76695721d", 1545) == expected
    single = hashlib.sha256(b"foobar55104dc76695721d").hexdigest()
    assert protocol.pwdhash("foobar", "55104dc76695721d", 1) == single


def test_challenge() -> None:
    challenge = Challenge("55104dc76695721d", 1545)
    good = protocol.pwdhash("foobar", challenge.salt, 1545)
    assert challenge.verify("foobar", good, 2)
    assert not challenge.verify("foobar", good, 1)
    assert challenge.verify("foobar", protocol.pwdhash("foobar", challenge.salt, 1), 0)
    assert not challenge.verify("foobar", "", 2)
    for _ in range(50):
        fresh = Challenge.new()
        assert 4000 <= fresh.iterations <= 8095
        assert len(fresh.salt) <= 16 and int(fresh.salt, 16) < 2**63


def test_greeting() -> None:
    assert protocol.greeting(None) == b'+HI {"v":2}\r\n'
    assert protocol.greeting(Challenge("ab12", 4001)) == b'+HI {"v":2,"i":4001,"s":"ab12"}\r\n'

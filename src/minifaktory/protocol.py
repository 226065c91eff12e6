"""The Faktory Work Protocol without I/O: bytes in, commands out, replies to bytes.

How this works:

* ``LineReader.feed(data)`` splits the byte stream into command lines. A line
  ends at ``\\n``; one trailing ``\\r`` is dropped too, so LF-only clients (Ruby)
  work (spec §1.1). A line longer than the cap is reported once as
  ``OVERLONG`` and skipped up to its newline, so the connection stays usable.
* ``parse_command(line)`` splits ``VERB payload`` at the first space. Verbs are
  case-sensitive; the payload is kept as raw bytes for the JSON decoders.
* The handshake (spec §1.2): the server greets with ``+HI {...}``, optionally
  carrying a salt and an iteration count; ``Challenge.verify`` checks the
  client's ``pwdhash``.
* Reply encoders produce RESP2 bytes: ``+OK``, ``-ERR text``, ``$len`` bulk,
  ``$-1`` null.

Nothing here touches a socket, so tests can feed every sample at every split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OK: Final = b"+OK\r\n"
NULL: Final = b"$-1\r\n"
EMPTY_MAP: Final = b"$2\r\n{}\r\n"


class _Overlong:
    """Marker for a line that exceeded the configured cap."""

    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG: Final = _Overlong()


class LineReader:
    """Incremental splitter of a byte stream into protocol lines."""

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes | _Overlong]:
        """Add bytes; return every complete line (without its line ending)."""
        out: list[bytes | _Overlong] = []
        buf = self._buf
        # What was held has no newline: search only the new bytes, so a long line
        # arriving in small pieces costs linear time, not quadratic.
        scan = len(buf)
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, scan))
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
                if end - start > self.max_line:
                    out.append(OVERLONG)
                else:
                    out.append(bytes(buf[start:end]))
            start = nl + 1
        del buf[:start]
        if self._discarding:
            buf.clear()
        elif len(buf) > self.max_line + 1:
            out.append(OVERLONG)
            self._discarding = True
            buf.clear()
        return out

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete line."""
        return len(self._buf)


@dataclass(frozen=True, slots=True)
class Command:
    """One client command: the verb and the raw payload after the first space.

    ``payload`` is ``None`` when the line had no space at all (``ACK``), which
    Faktory answers differently from an empty payload (``ACK `` ).
    """

    verb: str
    payload: bytes | None

    @property
    def text(self) -> str:
        """The payload as text ('' when absent), for token commands and error echoes."""
        return "" if self.payload is None else self.payload.decode("utf-8", "replace")


def parse_command(line: bytes) -> Command:
    """Split a command line into verb and payload."""
    verb, sep, payload = line.partition(b" ")
    return Command(verb.decode("utf-8", "replace"), payload if sep else None)


# -- replies -------------------------------------------------------------------


def simple(text: str) -> bytes:
    """A RESP simple string: ``+text``."""
    return b"+" + _one_line(text).encode() + b"\r\n"


def error(message: str, code: str = "ERR") -> bytes:
    """A RESP error: ``-CODE message`` (newlines replaced so framing survives)."""
    return f"-{code} {_one_line(message)}\r\n".encode()


def bulk(data: bytes) -> bytes:
    """A RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


# -- handshake -----------------------------------------------------------------

HELLO_PREFIX: Final = b"HELLO {"
PROTOCOL_VERSION: Final = 2
MIN_ITERATIONS: Final = 4000
MAX_ITERATIONS: Final = 8095


def pwdhash(password: str, salt: str, iterations: int) -> str:
    """Faktory's password hash: ``iterations`` rounds of SHA-256 over password‖salt."""
    import hashlib  # this and the other password helpers load only when a password is set

    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(max(iterations, 1) - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@dataclass(frozen=True, slots=True)
class Challenge:
    """The salt and iteration count sent in a password-protected greeting."""

    salt: str
    iterations: int

    @classmethod
    def new(cls) -> Challenge:
        """A fresh random challenge, as Faktory makes one per connection."""
        import secrets

        iterations = MIN_ITERATIONS + secrets.randbelow(MAX_ITERATIONS - MIN_ITERATIONS + 1)
        return cls(f"{secrets.randbits(63):x}", iterations)

    def verify(self, password: str, client_hash: str, client_version: int) -> bool:
        """Check ``pwdhash``; clients older than v2 hash once (the PyPI client relies on it)."""
        import hmac

        iterations = self.iterations if client_version >= PROTOCOL_VERSION else 1
        expected = pwdhash(password, self.salt, iterations)
        return hmac.compare_digest(expected.encode(), client_hash.encode())


def greeting(challenge: Challenge | None) -> bytes:
    """The ``+HI`` line; key order v, i, s as the Go server emits it."""
    if challenge is None:
        return b'+HI {"v":2}\r\n'
    return b'+HI {"v":2,"i":%d,"s":"%s"}\r\n' % (challenge.iterations, challenge.salt.encode())


# -- the client's side -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One server reply: ``+`` simple string, ``-`` error, or ``$`` bulk (``None``: null)."""

    kind: str
    data: bytes | None


class ReplyReader:
    """Incremental parser of the server's RESP2 replies, for clients."""

    __slots__ = ("_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        #: The length of the bulk string whose body is awaited, or -1.
        self._need = -1

    def feed(self, data: bytes) -> list[Reply]:
        """Add bytes; return every complete reply."""
        out: list[Reply] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            if self._need >= 0:
                end = start + self._need
                if len(buf) < end + 2:
                    break
                out.append(Reply("$", bytes(buf[start:end])))
                start, self._need = end + 2, -1
                continue
            nl = buf.find(b"\r\n", start)
            if nl < 0:
                break
            kind, body = chr(buf[start]) if nl > start else "", bytes(buf[start + 1 : nl])
            start = nl + 2
            if kind in ("+", "-"):
                out.append(Reply(kind, body))
            elif kind == "$" and body.lstrip(b"-").isdigit():
                size = int(body)
                if size < 0:
                    out.append(Reply("$", None))
                else:
                    self._need = size
            else:
                raise ValueError(f"not a Faktory reply: {kind!r} {body[:80]!r}")
        del buf[:start]
        return out

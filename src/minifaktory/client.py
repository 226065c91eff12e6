"""A blocking Faktory client: what the ``minifaktory`` tools use, and any script may.

It speaks to minifaktory and to the real Faktory alike. The server is named by a
URL as every Faktory client names it (spec §6.2): ``tcp://[:password@]host:port``
or ``tcp+tls://…``; ``FAKTORY_PROVIDER`` names the variable holding the URL,
else ``FAKTORY_URL``, else ``tcp://localhost:7419``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from minifaktory.protocol import PROTOCOL_VERSION, Reply, ReplyReader, pwdhash

DEFAULT_URL = "tcp://localhost:7419"
DEFAULT_PORT = 7419
#: Seconds to wait for the TCP (and TLS) connection and the greeting.
CONNECT_TIMEOUT = 5.0


class FaktoryError(Exception):
    """Any failure talking to a Faktory server."""


class ServerError(FaktoryError):
    """An ``-ERR``-style reply; ``code`` is its first word (ERR, NOTUNIQUE, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}" if message else code)
        self.code = code
        self.message = message


class NotUnique(ServerError):
    """PUSH of a unique job whose lock is held (``-NOTUNIQUE``)."""


class ConnectionFailed(FaktoryError):
    """The server could not be reached, or it closed the connection."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a server is and how to reach it."""

    host: str
    port: int
    password: str
    tls: bool

    @property
    def display(self) -> str:
        """The URL without its password."""
        scheme = "tcp+tls" if self.tls else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The server URL the environment names, as Faktory's clients read it."""
    env = os.environ if environ is None else environ
    provider = env.get("FAKTORY_PROVIDER", "")
    if provider:
        if ":" in provider:
            raise FaktoryError(
                "FAKTORY_PROVIDER names the variable that holds the URL, not the URL itself"
            )
        return env.get(provider, "") or DEFAULT_URL
    return env.get("FAKTORY_URL", "") or DEFAULT_URL


def parse_url(url: str) -> Location:
    """``tcp://[user:password@]host:port`` or ``tcp+tls://…`` → ``Location``."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.scheme not in ("tcp", "tcp+tls"):
        raise FaktoryError(f"unsupported URL scheme {parts.scheme!r}: use tcp:// or tcp+tls://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise FaktoryError(f"invalid port in {url!r}") from None
    return Location(
        host=parts.hostname or "localhost",
        port=port,
        password=unquote(parts.password or ""),
        tls=parts.scheme == "tcp+tls",
    )


class Client:
    """One connection to a Faktory server. Use it from one thread at a time.

    ``with Client(url) as c: c.push({"jobtype": "Email", "args": [1]})``
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
        wid: str | None = None,
        labels: Iterable[str] = (),
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.location = parse_url(url if url is not None else url_from_env())
        self.wid = wid
        self._reader = ReplyReader()
        self._pending: list[Reply] = []
        self._sock: socket.socket | None = self._connect(timeout, tls_context)
        try:
            self._handshake(labels)
        except BaseException:
            self.close()
            raise

    # -- connection ----------------------------------------------------------------

    def _connect(self, timeout: float, tls_context: ssl.SSLContext | None) -> socket.socket:
        where = self.location
        try:
            sock = socket.create_connection((where.host, where.port), timeout=timeout)
            if where.tls:
                context = tls_context if tls_context is not None else ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=where.host)
        except OSError as exc:
            raise ConnectionFailed(f"{where.display}: cannot connect: {exc}") from None
        return sock

    def _handshake(self, labels: Iterable[str]) -> None:
        greeting = self._text(self._reply(), "greeting")
        if not greeting.startswith("HI "):
            raise FaktoryError(f"unexpected greeting {greeting[:80]!r}")
        offer = json.loads(greeting[3:])
        hello: dict[str, Any] = {"v": PROTOCOL_VERSION}
        if self.wid is not None:
            hello.update(
                wid=self.wid, hostname=socket.gethostname(), pid=os.getpid(), labels=list(labels)
            )
        if "s" in offer:
            if not self.location.password:
                raise FaktoryError("the server requires a password: put it in the URL")
            hello["pwdhash"] = pwdhash(self.location.password, offer["s"], int(offer.get("i", 1)))
        self._expect_ok(self.call("HELLO", hello))

    def close(self) -> None:
        """Say goodbye (``END``) and close the socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall(b"END\r\n")
        sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wire ------------------------------------------------------------------------

    def call(self, verb: str, payload: Any = None) -> Reply:
        """Send one command and return its reply; ``payload`` is JSON-encoded unless it
        is already ``str``/``bytes``."""
        line = verb.encode()
        if payload is not None:
            if isinstance(payload, bytes):
                body = payload
            elif isinstance(payload, str):
                body = payload.encode()
            else:
                body = json.dumps(payload, separators=(",", ":")).encode()
            line += b" " + body
        try:
            self._open().sendall(line + b"\r\n")
        except OSError as exc:
            raise ConnectionFailed(f"{self.location.display}: {exc}") from None
        return self._reply()

    def _open(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionFailed("the connection is closed")
        return self._sock

    def _reply(self) -> Reply:
        while not self._pending:
            try:
                data = self._open().recv(65536)
            except OSError as exc:
                raise ConnectionFailed(f"{self.location.display}: {exc}") from None
            if not data:
                raise ConnectionFailed(f"{self.location.display} closed the connection")
            try:
                self._pending += self._reader.feed(data)
            except ValueError as exc:
                raise FaktoryError(str(exc)) from None
        return self._pending.pop(0)

    @staticmethod
    def _raise_for(reply: Reply) -> None:
        if reply.kind == "-":
            text = (reply.data or b"").decode("utf-8", "replace")
            code, _, message = text.partition(" ")
            raise (NotUnique if code == "NOTUNIQUE" else ServerError)(code, message)

    def _text(self, reply: Reply, what: str) -> str:
        self._raise_for(reply)
        if reply.data is None:
            raise FaktoryError(f"empty reply to {what}")
        return reply.data.decode("utf-8", "replace")

    def _expect_ok(self, reply: Reply) -> None:
        self._raise_for(reply)
        if reply.kind != "+":
            raise FaktoryError(f"expected OK, got {reply.data!r}")

    def _json(self, reply: Reply) -> Any:
        self._raise_for(reply)
        return None if reply.data is None else json.loads(reply.data)

    # -- commands ----------------------------------------------------------------------

    def push(self, job: Mapping[str, Any]) -> str:
        """PUSH one job (a jid is made when it has none); its jid."""
        body = _with_defaults(job)
        self._expect_ok(self.call("PUSH", body))
        return str(body["jid"])

    def push_bulk(self, jobs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """PUSHB: jid → error text of every job the server refused ({} when none)."""
        refused = self._json(self.call("PUSHB", [_with_defaults(j) for j in jobs]))
        return dict(refused or {})

    def fetch(self, *queues: str) -> dict[str, Any] | None:
        """FETCH the next job of these queues (default: ``default``), or None after the
        server's wait."""
        job = self._json(self.call("FETCH", " ".join(queues or ("default",))))
        return dict(job) if job is not None else None

    def ack(self, jid: str) -> None:
        """ACK a fetched job."""
        self._expect_ok(self.call("ACK", {"jid": jid}))

    def fail(
        self, jid: str, errtype: str, message: str, backtrace: list[str] | None = None
    ) -> None:
        """FAIL a fetched job."""
        body = {"jid": jid, "errtype": errtype, "message": message, "backtrace": backtrace or []}
        self._expect_ok(self.call("FAIL", body))

    def beat(self) -> str:
        """BEAT (worker connections): '' or the state the server asks for (quiet, terminate)."""
        reply = self.call("BEAT", {"wid": self.wid})
        if reply.kind == "+":
            return ""
        state = self._json(reply)
        return str(state.get("state", "")) if isinstance(state, dict) else ""

    def info(self) -> dict[str, Any]:
        """INFO."""
        return dict(self._json(self.call("INFO")))

    def mutate(self, operation: Mapping[str, Any]) -> None:
        """MUTATE a set: ``{"cmd": "kill", "target": "retries", "filter": {...}}``."""
        self._expect_ok(self.call("MUTATE", operation))

    def queue(self, action: str, *queues: str) -> None:
        """QUEUE PAUSE / RESUME / REMOVE of these queues (``*`` for all)."""
        self._expect_ok(self.call("QUEUE", " ".join((action.upper(), *queues))))

    def flush(self) -> None:
        """FLUSH: delete everything (tests and development only)."""
        self._expect_ok(self.call("FLUSH"))


def _with_defaults(job: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(job)
    body.setdefault("jid", uuid.uuid4().hex)
    body.setdefault("args", [])
    return body

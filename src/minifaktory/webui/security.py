"""HTTP Basic auth and cross-site request protection, as plain ASGI middleware.

Faktory's rules (spec §7.1): with a web password, every page but ``/static``
and ``/health`` asks for Basic auth (any user name, realm ``Faktory``); a
state-changing request must come from the same site (``Sec-Fetch-Site``
``same-origin`` or ``none``, or an ``Origin`` matching ``Host``), else 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = ("/static/", "/health", "/readyz")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def _plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def same_site(scope: Scope) -> bool:
    """Whether a request comes from a page of this site (or from no page at all)."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site:
        return fetch_site in ("same-origin", "none")
    origin = _header(scope, b"origin")
    if not origin:
        return True  # not a browser-initiated cross-site request (curl, clients)
    return urlsplit(origin).netloc == _header(scope, b"host")


class Guard:
    """Basic auth (when a password is set) and same-site checks for unsafe methods."""

    def __init__(self, app: ASGIApp, password: str) -> None:
        self.app = app
        self.password = password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.password and not path.startswith(OPEN_PATHS):
            auth = _header(scope, b"authorization")
            if not auth:
                challenge = [(b"www-authenticate", b'Basic realm="Faktory"')]
                await _plain(send, 401, "Authorization required", challenge)
                return
            if not self._valid(auth):
                await _plain(send, 401, "Authorization failed", [])
                return
        if scope["method"] not in SAFE_METHODS and not same_site(scope):
            await _plain(send, 403, "Cross-site request refused", [])
            return
        await self.app(scope, receive, send)

    def _valid(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _user, _, given = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode(), self.password.encode())

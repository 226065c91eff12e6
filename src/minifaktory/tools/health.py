"""``minifaktory health [URL]``: is the server up, answering, and taking writes?

Made for container health checks where there is no curl: it connects over the
protocol (password from the URL, else ``FAKTORY_PASSWORD`` as the server reads
it), asks INFO, and checks that the server's last write reached its file
recently (an idle server rewrites a probe row every 30 s). One line out; exit
status 0 when healthy, 1 when not. Against the real Faktory, which reports no
store state, the protocol check alone decides.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from minifaktory.client import Client, FaktoryError, parse_url, url_from_env
from minifaktory.clock import NS, parse_ns

#: A last write older than this (three probe periods) means the file stopped taking writes.
STALE_WRITE_S = 90


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="minifaktory health", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("url", nargs="?", help="tcp://[:password@]host:port (default: FAKTORY_URL)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--cafile", help="trust this CA certificate (PEM) for tcp+tls://")
    parser.add_argument(
        "--insecure", action="store_true", help="tcp+tls:// without checking the certificate"
    )
    args = parser.parse_args(argv)
    where = "server"
    try:
        url = with_password(args.url or url_from_env(environ), environ)
        where = parse_url(url).display
        healthy, reason = check(url, args.timeout, tls_context(args.cafile, args.insecure))
    except FaktoryError as exc:
        healthy, reason = False, str(exc).removeprefix(f"{where}: ")
    print(f"{'OK' if healthy else 'UNHEALTHY'} {where}: {reason}")
    return 0 if healthy else 1


def with_password(url: str, environ: Mapping[str, str]) -> str:
    """``url`` with the server's own password (``FAKTORY_PASSWORD``) when it names none."""
    location = parse_url(url)
    password = environ.get("FAKTORY_PASSWORD", "")
    if location.password or not password:
        return url
    if password.startswith("/"):
        try:
            password = Path(password).read_text().strip()
        except OSError as exc:
            raise FaktoryError(f"cannot read the password file {password}: {exc}") from None
    scheme = "tcp+tls" if location.tls else "tcp"
    host = f"[{location.host}]" if ":" in location.host else location.host
    return f"{scheme}://:{password}@{host}:{location.port}"


def tls_context(cafile: str | None, insecure: bool) -> ssl.SSLContext | None:
    """The TLS context for ``--cafile`` / ``--insecure`` (None: the system's defaults)."""
    if cafile is None and not insecure:
        return None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise FaktoryError(f"cannot use the CA file {cafile}: {exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check(url: str, timeout: float, context: ssl.SSLContext | None = None) -> tuple[bool, str]:
    """(healthy, one-line reason)."""
    with Client(url, timeout=timeout, tls_context=context) as client:
        info = client.info()
    server = info.get("server", {})
    said = f"{server.get('description', 'Faktory')} {server.get('faktory_version', '?')}"
    store = server.get("store")
    if not isinstance(store, dict):
        return True, f"{said} answers"
    if not store.get("writable", False):
        return False, f"the database does not take writes: {store.get('error') or 'unknown error'}"
    last = str(store.get("last_write") or "")
    if not last:
        return False, "the database has not been written yet"
    age = (parse_ns(str(info["now"])) - parse_ns(last)) / NS
    if age > STALE_WRITE_S:
        return False, f"the database was last written {age:.0f} s ago (a probe is due every 30 s)"
    connections = server.get("connections", 0)
    return True, f"{said} answers, {connections} connections, last write {age:.0f} s ago"

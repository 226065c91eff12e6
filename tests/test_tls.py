"""TLS as Faktory 1.9+ serves it: a key pair in the config dir turns on TLS for the command
port and the Web UI; anything wrong with the files stops the start with a clear message."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.client import Client, ConnectionFailed
from minifaktory.errors import ConfigError
from minifaktory.tls import CERT_FILE, KEY_FILE, server_context
from tests.tls_support import TLSFiles, make_tls_files

#: Short handshake deadline, so a plain client on the TLS port is dropped quickly.
HANDSHAKE = 0.5
DEADLINE = 10.0
MISSED = "did not complete the TLS handshake"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
def tls_server(tls_files: TLSFiles) -> Iterator[RunningServer]:
    with minifaktory.run(
        config_dir=tls_files.config_dir,
        web_binding=f"127.0.0.1:{free_port()}",
        fetch_timeout=0.3,
        handshake_timeout=HANDSHAKE,
    ) as srv:
        yield srv


def push_one(srv: RunningServer, context: ssl.SSLContext) -> str:
    with Client(srv.url, tls_context=context) as client:
        return client.push({"jobtype": "ping", "args": []})


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ends the connection without sending a single byte."""
    sock.settimeout(DEADLINE)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True


# --------------------------------------------------------------------------- serving


def test_url_says_tcp_tls(tls_files: TLSFiles) -> None:
    with minifaktory.run(config_dir=tls_files.config_dir, password="s3cret") as srv:
        assert srv.server.url_without_password == f"tcp+tls://127.0.0.1:{srv.port}"
        assert srv.url == f"tcp+tls://:s3cret@127.0.0.1:{srv.port}"
        assert srv.server.tls is not None
        assert srv.server.tls.minimum_version == ssl.TLSVersion.TLSv1_2


def test_no_key_pair_means_plain_tcp(tmp_path: Path) -> None:
    assert server_context(None) is None
    assert server_context(tmp_path) is None
    with minifaktory.run(config_dir=tmp_path) as srv:
        assert srv.url == f"tcp://127.0.0.1:{srv.port}"
        assert srv.server.tls is None


def test_push_fetch_ack_over_tls(tls_server: RunningServer, tls_files: TLSFiles) -> None:
    context = tls_files.client_context()
    jid = push_one(tls_server, context)
    with Client(tls_server.url, tls_context=context, wid=uuid.uuid4().hex) as worker:
        job = worker.fetch("default")
        assert job is not None and job["jid"] == jid
        worker.ack(jid)
        assert worker.beat() == ""  # +OK: no quiet/terminate
    assert tls_server.info()["faktory"]["total_processed"] == 1


def test_a_client_negotiates_tls_1_3(tls_server: RunningServer, tls_files: TLSFiles) -> None:
    context = tls_files.client_context()
    raw = socket.create_connection((tls_server.host, tls_server.port), timeout=DEADLINE)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.3"
        assert sock.recv(64).startswith(b"+HI ")


def test_tls_1_1_is_refused_and_1_2_accepted(
    tls_server: RunningServer, tls_files: TLSFiles
) -> None:
    def old_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
        context = tls_files.client_context()
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in Python, on purpose here
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
        return context

    address = (tls_server.host, tls_server.port)
    tls11 = old_client(ssl.TLSVersion.TLSv1_1)
    with socket.create_connection(address, timeout=DEADLINE) as raw, pytest.raises(ssl.SSLError):
        tls11.wrap_socket(raw, server_hostname="127.0.0.1")

    # The same client, allowed TLS 1.2, gets in: the version alone was refused.
    tls12 = old_client(ssl.TLSVersion.TLSv1_2)
    raw = socket.create_connection(address, timeout=DEADLINE)
    with tls12.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.2"
        assert sock.recv(64).startswith(b"+HI ")


def test_a_plain_client_on_the_tls_port_is_dropped_and_the_server_carries_on(
    tls_server: RunningServer, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="minifaktory.server")
    address = (tls_server.host, tls_server.port)
    with socket.create_connection(address) as talker:  # sends HELLO without TLS
        talker.sendall(b'HELLO {"v":2}\r\n')
        assert closed_by_server(talker)
    with socket.create_connection(address) as waiter:  # waits for +HI, as clients do
        started = time.monotonic()
        assert closed_by_server(waiter)
        assert time.monotonic() - started < HANDSHAKE + 2
    with socket.create_connection(address):  # connects and leaves
        pass

    assert push_one(tls_server, tls_files.client_context())
    assert tls_server.info()["faktory"]["queues"] == {"default": 1}

    def missed() -> int:
        return sum(MISSED in r.getMessage() for r in caplog.records)

    wait_for(lambda: missed() >= 3, "three debug lines about failed TLS handshakes")
    server_lines = [r for r in caplog.records if r.name.startswith(("minifaktory", "asyncio"))]
    assert all(r.levelno == logging.DEBUG for r in server_lines if MISSED in r.getMessage())
    assert not [r for r in server_lines if r.levelno >= logging.WARNING]


def test_a_tls_client_on_a_plain_port_is_dropped(
    tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="minifaktory.server")
    with minifaktory.run() as srv:
        secure = f"tcp+tls://127.0.0.1:{srv.port}"
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            Client(secure, tls_context=tls_files.client_context())
        with Client(srv.url) as client:
            assert client.push({"jobtype": "ping", "args": []})
        wait_for(
            lambda: any("did not start with HELLO" in r.getMessage() for r in caplog.records),
            "a debug line about the connection that sent no HELLO",
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_tls_on_the_stock_asyncio_loop(
    tls_files: TLSFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``serve()`` runs on the caller's loop: here asyncio's own, not uvloop."""
    caplog.set_level(logging.DEBUG, logger="minifaktory.server")
    job = b'{"jid":"tls-job-0001","jobtype":"ping","args":[]}'

    async def main() -> bytes:
        config_dir = tls_files.config_dir
        async with minifaktory.serve(
            db_path=tmp_path / "s.db", config_dir=config_dir, handshake_timeout=HANDSHAKE
        ) as server:
            with anyio.fail_after(DEADLINE):
                plain = await anyio.connect_tcp(server.host, server.port)
                async with plain:
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await plain.receive()
                stream = await anyio.connect_tcp(
                    server.host,
                    server.port,
                    ssl_context=tls_files.client_context(),
                    tls_standard_compatible=False,
                )
                async with stream:
                    replies = await stream.receive()
                    await stream.send(b"HELLO {}\r\nPUSH " + job + b"\r\n")
                    while replies.count(b"\r\n") < 3:
                        replies += await stream.receive()
                while not any(MISSED in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.02)
            return replies

    assert anyio.run(main) == b'+HI {"v":2}\r\n+OK\r\n+OK\r\n'


def test_the_unix_socket_stays_plain(tls_files: TLSFiles, tmp_path: Path) -> None:
    path = tmp_path / "mf.sock"
    with minifaktory.run(config_dir=tls_files.config_dir, unix_socket=path) as srv:
        assert srv.url.startswith("tcp+tls://")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(path))
            assert sock.recv(64).startswith(b"+HI ")


def test_idle_tls_clients_do_not_hold_the_shutdown(tls_files: TLSFiles) -> None:
    context = tls_files.client_context()
    with minifaktory.run(config_dir=tls_files.config_dir) as srv:
        idle = [Client(srv.url, tls_context=context) for _ in range(3)]
        started = time.monotonic()
    try:
        assert time.monotonic() - started < 2.0
        for client in idle:
            with pytest.raises(ConnectionFailed):
                client.info()
    finally:
        for client in idle:
            client.close()


def test_web_ui_over_https(tls_server: RunningServer, tls_files: TLSFiles) -> None:
    port = tls_server.server.web_port
    with httpx.Client(verify=tls_files.client_context(), timeout=DEADLINE) as http:
        response = http.get(f"https://127.0.0.1:{port}/")
        assert response.status_code == 200
        assert "minifaktory" in response.text.lower()
        with pytest.raises(httpx.HTTPError):
            http.get(f"http://127.0.0.1:{port}/")  # plain HTTP on the TLS port
        assert http.get(f"https://localhost:{port}/").status_code == 200


def test_the_health_tool_trusts_the_ca_named_by_ssl_cert_file(
    tls_server: RunningServer, tls_files: TLSFiles
) -> None:
    """How a container health check reaches a TLS server today (see docs/operations.md)."""
    url = f"tcp+tls://localhost:{tls_server.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKTORY", "SSL_CERT"))}

    def health(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "minifaktory", "health", url],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    trusted = health(SSL_CERT_FILE=str(tls_files.ca_file))
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert trusted.stdout.startswith(f"OK {url}: ")
    untrusted = health()
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout


def test_the_health_tool_with_cafile_or_insecure(
    tls_server: RunningServer, tls_files: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    from minifaktory.cli import main

    url = f"tcp+tls://localhost:{tls_server.port}"
    assert main(["health", url, "--cafile", str(tls_files.ca_file)], environ={}) == 0
    assert main(["health", url, "--insecure"], environ={}) == 0
    assert main(["health", url, "--cafile", "/nonexistent-ca.pem"], environ={}) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK ") and out[1].startswith("OK ")
    assert out[2].startswith("UNHEALTHY ")
    assert "cannot use the CA file /nonexistent-ca.pem" in out[2]


# --------------------------------------------------------------------------- bad files


def _remove(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _mismatched_key(files: TLSFiles) -> None:
    files.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(files.key))


def _encrypted_key(files: TLSFiles) -> None:
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )


def _der_cert(files: TLSFiles) -> None:
    files.cert.write_bytes(ssl.PEM_cert_to_DER_cert(files.cert.read_text()))


def _cert_text(text: str) -> Callable[[TLSFiles], None]:
    def spoil(files: TLSFiles) -> None:
        files.cert.write_text(text)

    return spoil


def _key_text(text: str) -> Callable[[TLSFiles], None]:
    def spoil(files: TLSFiles) -> None:
        files.key.write_text(text)

    return spoil


def _swapped(files: TLSFiles) -> None:
    key, cert = files.key.read_bytes(), files.cert.read_bytes()
    files.key.write_bytes(cert)
    files.cert.write_bytes(key)


BAD_FILES: dict[str, tuple[Callable[[TLSFiles], None], str]] = {
    "only-key": (
        lambda f: _remove(f.cert),
        rf"TLS needs both {KEY_FILE} and {CERT_FILE} in .*: found {KEY_FILE} but .*{CERT_FILE}"
        " is missing",
    ),
    "only-cert": (
        lambda f: _remove(f.key),
        rf"found {CERT_FILE} but .*{KEY_FILE} is missing",
    ),
    "unreadable-key": (
        lambda f: _directory(f.key),
        rf"Unable to read .*{KEY_FILE}: Is a directory",
    ),
    "unreadable-cert": (
        lambda f: _directory(f.cert),
        rf"Unable to read .*{CERT_FILE}: Is a directory",
    ),
    "mismatched-key": (
        _mismatched_key,
        rf"the private key .*{KEY_FILE} does not match the certificate .*{CERT_FILE}",
    ),
    "cert-not-pem": (
        _cert_text("hello\n"),
        rf"{CERT_FILE} is not a PEM certificate",
    ),
    "cert-in-der": (_der_cert, rf"{CERT_FILE} is not a PEM certificate"),
    "key-not-pem": (
        _key_text("hello\n"),
        rf"{KEY_FILE} is not a PEM private key",
    ),
    "swapped": (_swapped, rf"{CERT_FILE} is not a PEM certificate"),
    "encrypted-key": (_encrypted_key, rf"{KEY_FILE} is encrypted"),
    "corrupt-cert": (
        _cert_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        rf"Unable to load the TLS certificate .*{CERT_FILE} with the key",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_stop_the_start_with_a_clear_message(tmp_path: Path, case: str) -> None:
    files = make_tls_files(tmp_path)
    spoil, message = BAD_FILES[case]
    spoil(files)
    with (
        pytest.raises(ConfigError, match=message),
        minifaktory.run(config_dir=files.config_dir),
    ):
        pytest.fail("the server started")


def test_the_command_reports_bad_files_and_exits_1(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    files.cert.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKTORY")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "minifaktory", "-c", str(files.config_dir)),
            *("--db", str(tmp_path / "db.sqlite"), "-b", "127.0.0.1:0", "-w", "127.0.0.1:0"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"Unable to run minifaktory: TLS needs both {KEY_FILE} and {CERT_FILE}" in done.stderr


def test_a_chain_file_is_accepted(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    files = make_tls_files(tmp_path, intermediate)
    leaf = intermediate.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    context = ssl.create_default_context()
    root.configure_trust(context)
    with minifaktory.run(config_dir=files.config_dir) as srv:
        assert push_one(srv, context)


def test_the_async_client_over_tls(tls_server: RunningServer, tls_files: TLSFiles) -> None:
    from minifaktory.client import AsyncClient

    async def scenario() -> None:
        url = f"tcp+tls://localhost:{tls_server.port}"
        async with AsyncClient(url, tls_context=tls_files.client_context()) as c:
            jid = await c.push({"jobtype": "Secure"})
            job = await c.fetch("default")
            assert job is not None and job["jid"] == jid
            await c.ack(jid)
        with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await AsyncClient(url).connect()

    asyncio.run(scenario())

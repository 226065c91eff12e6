"""Real clients over TLS (``tcp+tls://``): npm ``faktory-worker``, PyPI ``faktory`` and
``pyfaktory`` against a server whose config dir holds a key pair for 127.0.0.1.

``faktory-worker`` 4.7.1 takes host, port and password from a ``tcp+tls://`` URL
but speaks TLS only when given ``tlsOptions``; ``tests/compat/node/tls.js`` passes
``{}`` and Node verifies the certificate against ``NODE_EXTRA_CA_CERTS``. The two
Python clients switch to TLS on the URL alone but never verify the certificate
(cdrx calls the deprecated ``ssl.wrap_socket``; pyfaktory builds an
``SSLContext(PROTOCOL_TLS)``, whose default is ``CERT_NONE``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.compat.compat_support import (
    DEADLINE,
    FETCH_TIMEOUT,
    NODE_DIR,
    PASSWORD,
    Harness,
    Node,
    RecordingWorker,
    cdrx_running,
    counts,
    empty_sets,
    push_with_both_python_clients,
)
from tests.tls_support import TLSFiles, make_tls_files

import minifaktory

pytestmark = pytest.mark.compat


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
def tls_harness(tls_files: TLSFiles) -> Iterator[Harness]:
    """A password-protected server serving TLS (no ``Harness.wire()``: that one is plain)."""
    clock = minifaktory.FakeClock()
    with minifaktory.run(
        config_dir=tls_files.config_dir,
        password=PASSWORD,
        clock=clock,
        fetch_timeout=FETCH_TIMEOUT,
    ) as server:
        assert server.url.startswith(f"tcp+tls://:{PASSWORD}@127.0.0.1:")
        yield Harness(server, clock, PASSWORD)


def run_tls_js(node: Node, url: str, jobs: list[list[Any]], ca_file: Path | None) -> Any:
    env = node._env(url)
    env.pop("NODE_EXTRA_CA_CERTS", None)
    if ca_file is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ca_file)
    return subprocess.run(
        [node.node, str(NODE_DIR / "tls.js"), json.dumps({"jobs": jobs})],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE + 5,
        check=False,
    )


def test_node_pushes_and_works_over_tls(
    tls_harness: Harness, tls_files: TLSFiles, node: Node
) -> None:
    h = tls_harness
    done = run_tls_js(node, h.url, [["add", 1, 2], ["mul", 3]], tls_files.ca_file)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tls"] is True
    assert [job["args"] for job in out["worked"]] == [[1, 2], [3]]
    assert [job["jid"] for job in out["worked"]] == out["pushed"]
    assert sorted(out["acked"]) == sorted(out["pushed"])
    assert counts(h) == {"processed": 2, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_node_refuses_a_certificate_it_does_not_trust(tls_harness: Harness, node: Node) -> None:
    done = run_tls_js(node, tls_harness.url, [["add", 1]], ca_file=None)
    assert done.returncode == 1
    assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in done.stderr
    assert counts(tls_harness)["queued"] == {}


@pytest.mark.usefixtures("keep_sigterm")
@pytest.mark.filterwarnings(
    "ignore:ssl.wrap_socket:DeprecationWarning",
    "ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning",
)
def test_python_clients_push_and_work_over_tls(tls_harness: Harness) -> None:
    h = tls_harness
    cdrx_jid, pyf_jid = push_with_both_python_clients(h.url)
    assert counts(h)["queued"] == {"default": 2}

    seen: list[tuple[int, str]] = []
    worker = RecordingWorker(h.url, queues=["default"], expect=2)
    worker.register("add", lambda n, who: seen.append((n, who)))
    with cdrx_running(worker):
        assert worker.finished.wait(DEADLINE)
    assert sorted(seen) == [(1, "cdrx"), (2, "pyfaktory")]
    assert sorted(worker.results) == sorted([("ack", cdrx_jid), ("ack", pyf_jid)])
    assert counts(h) == {"processed": 2, "failures": 0, "sets": empty_sets(), "queued": {}}

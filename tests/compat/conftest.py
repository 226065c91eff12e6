"""Fixtures for the client-compatibility tests: servers, with and without a password."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator

import pytest
from tests.compat.compat_support import FETCH_TIMEOUT, NODE_DIR, PASSWORD, Harness, Node

import minifaktory


def _harness(password: str) -> Iterator[Harness]:
    clock = minifaktory.FakeClock()
    with minifaktory.run(password=password, clock=clock, fetch_timeout=FETCH_TIMEOUT) as server:
        assert server.host == "127.0.0.1"
        yield Harness(server, clock, password)


@pytest.fixture
def harness() -> Iterator[Harness]:
    """A server without a password."""
    yield from _harness("")


@pytest.fixture
def secure_harness() -> Iterator[Harness]:
    """A server that requires ``PASSWORD``."""
    yield from _harness(PASSWORD)


@pytest.fixture(params=["open", "password"])
def any_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The same test against a server without and with a password."""
    yield from _harness(PASSWORD if request.param == "password" else "")


@pytest.fixture
def keep_sigterm() -> Iterator[None]:
    """cdrx's ``Worker()`` installs its own SIGTERM handler; put the old one back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def node() -> Iterator[Node]:
    """The Node ``faktory-worker`` scripts; skipped only when node itself is missing."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed; the faktory-worker (Node) tests need it")
    if not (NODE_DIR / "node_modules" / "faktory-worker" / "package.json").is_file():
        pytest.fail(
            f"{NODE_DIR}/node_modules is missing: run `npm ci --prefix tests/compat/node`",
            pytrace=False,
        )
    runner = Node(binary)
    yield runner
    runner.cleanup()

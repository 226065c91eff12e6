"""pytest plugin: fixtures only. ``faktory_server`` gives each test a fresh server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minifaktory.app import RunningServer, run


@pytest.fixture
def faktory_server() -> Iterator[RunningServer]:
    """A minifaktory server on 127.0.0.1 with a temporary database."""
    with run() as server:
        yield server


@pytest.fixture
def faktory_url(faktory_server: RunningServer) -> str:
    """``FAKTORY_URL`` of the ``faktory_server`` fixture."""
    url: str = faktory_server.url
    return url

"""The Web UI in a real headless Chromium (Debian's, driven by Playwright).

Screenshots of the main pages land in ``test-artifacts/`` at the project root.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, sync_playwright

import minifaktory
from minifaktory.app import RunningServer
from tests.conftest import WireClient, job

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-gpu", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make check installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def site() -> Iterator[tuple[RunningServer, str]]:
    toml = {
        "throttles": {"a-throttled-queue": {"concurrency": 3, "timeout": 60}},
        "cron": [{"schedule": "*/5 * * * *", "job": {"type": "ReportWithAVeryLongName" * 3}}],
    }
    with minifaktory.run(toml=toml, web_binding=f"127.0.0.1:{free_port()}") as srv:
        yield srv, f"http://127.0.0.1:{srv.server.web_port}"


def client(srv: RunningServer, **hello: object) -> WireClient:
    c = WireClient(srv.host, srv.port)
    assert c.hello(**hello) == b"+OK\r\n"
    return c


def test_dashboard_and_pages_fit_a_phone(browser: Browser, site: tuple[RunningServer, str]) -> None:
    srv, base = site
    c = client(srv)
    long = {"customer": "x" * 200, "note": "a-very-long-word-" * 20}
    c.call(
        "PUSH " + job(jid="failing-0001", jobtype="VeryLongJobTypeNameForLayout" * 3, args=[long])
    )
    c.call("FETCH default")
    c.call('FAIL {"jid":"failing-0001","errtype":"RuntimeError","message":"' + "boom " * 80 + '"}')
    c.call("PUSH " + job(queue="a-very-long-queue-name-" * 4))
    c.call("PUSH " + job(jid="locked-job-1", queue="mail", custom={"unique_for": 600}))
    spec = {"description": "A batch with a long description " * 5,
            "success": {"jid": "success-cb-1", "jobtype": "Done", "args": [long]}}  # fmt: skip
    bid = c.call("BATCH NEW " + json.dumps(spec)).split(b"\r\n")[1].decode()
    worker = client(srv, wid="worker-for-layout", hostname="host", pid=1, v=2)
    for width, name in [(375, "phone"), (1920, "desktop")]:
        page = browser.new_page(viewport={"width": width, "height": 900})
        for path in [
            "/",
            "/queues",
            "/busy",
            "/retries",
            "/scheduled",
            "/morgue",
            "/cron",
            "/batches",
            f"/batches/{bid}",
            "/locks",
            "/throttles",
            "/debug",
            "/queues/default",
            "/retries/job",
        ]:
            if path == "/retries/job":  # the failed job's page, with its timeline
                page.goto(base + "/retries")
                path = urlsplit(str(page.locator("td a").first.get_attribute("href"))).path
            page.goto(base + path)
            assert page.locator("h1").count() == 1
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px screen"
            shot = path.strip("/").replace("/", "-").replace(bid, "one") or "dashboard"
            if path.startswith("/retries/"):
                shot = "retries-job"
            page.screenshot(path=str(ARTIFACTS / f"{shot}-{name}.png"), full_page=True)
        page.close()
    c.close()
    worker.close()


def test_retry_a_failed_job_from_the_retries_page(
    browser: Browser, site: tuple[RunningServer, str]
) -> None:
    srv, base = site
    c = client(srv)
    c.call("PUSH " + job(jid="retry-me-001"))
    c.call("FETCH default")
    c.call('FAIL {"jid":"retry-me-001","errtype":"E","message":"first try"}')
    page = browser.new_page()
    page.goto(base + "/retries")
    page.check("input[name=key]")
    page.click("button[value=retry]")
    page.wait_for_url(base + "/retries")
    assert "No retries jobs were found" in page.content()
    fetched = json.loads(c.call("FETCH default").split(b"\r\n")[1])
    assert fetched["jid"] == "retry-me-001" and fetched["failure"]["message"] == "first try"
    assert c.call('ACK {"jid":"retry-me-001"}') == b"+OK\r\n"
    page.close()
    c.close()


def test_quiet_a_worker_from_the_busy_page(
    browser: Browser, site: tuple[RunningServer, str]
) -> None:
    srv, base = site
    worker = client(srv, wid="w-to-quiet", hostname="box", pid=7, v=2)
    page = browser.new_page()
    page.goto(base + "/busy")
    page.click("td.actions button[value=quiet]")
    page.wait_for_url(base + "/busy")
    assert "quiet" in page.inner_text("table")
    assert worker.call('BEAT {"wid":"w-to-quiet"}') == b'$17\r\n{"state":"quiet"}\r\n'
    page.close()
    worker.close()


def test_edit_a_queued_job_and_fetch_it(browser: Browser, site: tuple[RunningServer, str]) -> None:
    srv, base = site
    c = client(srv)
    c.call("PUSH " + job(jid="edit-me-0001", args=[1]))
    page = browser.new_page()
    page.goto(base + "/queues/default")
    page.click("td a[href$='/edit']")
    page.fill("textarea[name=args]", '["edited", 2]')
    page.fill("input[name=priority]", "8")
    page.click("text=Save")
    page.wait_for_url(base + "/queues/default")
    fetched = json.loads(c.call("FETCH default").split(b"\r\n")[1])
    assert (fetched["args"], fetched["priority"]) == (["edited", 2], 8)
    page.close()
    c.close()

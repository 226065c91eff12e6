"""Web UI pages beyond the job lists: cron, batches, locks, throttles, debug, and each
job's timeline and tags, over real HTTP against a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.protocol import pwdhash
from tests.conftest import WireClient, job
from tests.test_webui import SAME, free_port

TOML: dict[str, Any] = {
    "throttles": {"slow": {"concurrency": 2, "timeout": 30}},
    "cron": [{"schedule": "@hourly", "job": {"type": "Hourly", "queue": "cron", "args": [1]}}],
    "web": {"password": "hidden-web-pw"},
}


@pytest.fixture
def site() -> Iterator[tuple[RunningServer, httpx.Client, WireClient]]:
    with minifaktory.run(toml=TOML, password="hidden-pw", durability="full",
                         web_binding=f"127.0.0.1:{free_port()}") as srv:  # fmt: skip
        c = WireClient(srv.host, srv.port)
        challenge = json.loads(c.greeting[4:])
        c.hello(v=2, wid="w-pages", pwdhash=pwdhash("hidden-pw", challenge["s"], challenge["i"]))
        base = f"http://127.0.0.1:{srv.server.web_port}"
        with httpx.Client(base_url=base, auth=("", "hidden-web-pw"), timeout=10) as http:
            yield srv, http, c
        c.close()


def test_cron_page_lists_entries_and_runs_one_now(
    site: tuple[RunningServer, httpx.Client, WireClient],
) -> None:
    srv, http, c = site
    [entry] = http.get("/api/cron").json()
    assert (entry["jobtype"], entry["queue"], entry["schedule"]) == ("Hourly", "cron", "@hourly")
    assert entry["next_at"] and entry["key"]
    page = http.get("/cron")
    assert page.status_code == 200 and "Hourly" in page.text and "Run now" in page.text
    ran = http.post("/cron", data={"key": entry["key"]}, headers=SAME)
    assert ran.status_code == 302
    jid = http.post(f"/api/cron/{entry['key']}/run", headers=SAME).json()["jid"]
    assert srv.info()["faktory"]["queues"]["cron"] == 2
    fetched = json.loads(c.call("FETCH cron").split(b"\r\n")[1])
    assert fetched["jobtype"] == "Hourly" and fetched["args"] == [1]
    assert http.get("/api/cron").json()[0]["next_at"] == entry["next_at"]  # schedule untouched
    assert jid != fetched["jid"]  # every firing is a fresh job
    assert http.post("/api/cron/nope/run", headers=SAME).status_code == 404
    assert http.post("/cron", data={"key": "nope"}, headers=SAME).status_code == 404
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert http.post("/cron", data={"key": entry["key"]}, headers=cross).status_code == 403


def test_batches_list_detail_and_callbacks(
    site: tuple[RunningServer, httpx.Client, WireClient],
) -> None:
    _srv, http, c = site
    spec = {
        "description": "Nightly import",
        "success": {"jid": "success-cb-1", "jobtype": "Imported", "args": ["ok"]},
        "complete": {"jid": "complete-cb", "jobtype": "ImportDone", "args": []},
    }
    bid = c.call("BATCH NEW " + json.dumps(spec)).split(b"\r\n")[1].decode()
    for i in range(2):
        c.call("PUSH " + job(jid=f"member-{i}", queue="imports", custom={"bid": bid}))
    c.call(f"BATCH COMMIT {bid}")
    [listed] = http.get("/api/batches").json()["batches"]
    assert (listed["bid"], listed["description"], listed["state"]) == (
        bid, "Nightly import", "running",
    )  # fmt: skip
    assert (listed["total"], listed["pending"], listed["failed"]) == (2, 2, 0)
    assert listed["success"]["jobtype"] == "Imported"
    assert listed["success"]["state"] == "not yet"
    for _ in range(2):
        c.call("FETCH imports")
    c.call('ACK {"jid":"member-0"}')
    c.call('FAIL {"jid":"member-1","errtype":"E","message":"m"}')
    detail = http.get(f"/api/batches/{bid}").json()
    assert detail["failed_jids"] == ["member-1"]
    assert detail["state"] == "complete, with failures"
    assert detail["complete"]["state"] == "pushed" and detail["success"]["state"] == "not yet"
    page = http.get(f"/batches/{bid}")
    assert page.status_code == 200 and "member-1" in page.text and "ImportDone" in page.text
    assert "Nightly import" in http.get("/batches").text
    assert http.get("/api/batches/b-nope").status_code == 404
    assert http.get("/batches/b-nope").status_code == 404
    assert http.get("/api/batches", params={"after": "x"}).status_code == 400


def test_batches_page_in_pages(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _srv, http, c = site
    bids = {c.call("BATCH NEW {}").split(b"\r\n")[1].decode() for _ in range(30)}
    first = http.get("/api/batches").json()
    rest = http.get("/api/batches", params={"after": first["next_after"]}).json()
    assert len(first["batches"]) == 25 and len(rest["batches"]) == 5 and not rest["next_after"]
    assert {b["bid"] for b in first["batches"] + rest["batches"]} == bids
    assert all(b["state"] == "open" for b in rest["batches"])


def test_unique_locks_page_releases_locks(
    site: tuple[RunningServer, httpx.Client, WireClient],
) -> None:
    srv, http, c = site
    for i in range(3):
        assert c.call("PUSH " + job(jid=f"uniq-job-{i}", queue="mail", args=[i],
                                    custom={"unique_for": 600})) == b"+OK\r\n"  # fmt: skip
    again = job(jid="uniq-again", queue="mail", args=[0], custom={"unique_for": 600})
    assert c.call("PUSH " + again).startswith(b"-NOTUNIQUE")
    [mail] = http.get("/api/locks").json()
    assert mail["queue"] == "mail" and mail["count"] == 3
    held = {lock["jid"]: lock["key"] for lock in mail["locks"]}
    page = http.get("/locks")
    assert page.status_code == 200 and held["uniq-job-0"] in page.text
    released = http.post("/locks", data={"queue": "mail", "key": held["uniq-job-0"]}, headers=SAME)
    assert released.status_code == 302
    assert c.call("PUSH " + again) == b"+OK\r\n"  # the lock is gone: the same job is unique again
    assert srv.info()["faktory"]["unique_locks"] == {"mail": 3}
    body = {"keys": [held["uniq-job-1"], "no-such-key"]}
    assert http.post("/api/queues/mail/locks/release", json=body, headers=SAME).json() == {
        "count": 1
    }
    assert http.post("/api/queues/mail/locks/release", json={"all": True},
                     headers=SAME).json() == {"count": 2}  # fmt: skip
    assert srv.info()["faktory"]["unique_locks"] == {}
    assert "No uniqueness locks are held" in http.get("/locks").text
    assert srv.info()["faktory"]["queues"]["mail"] == 4  # releasing never touches jobs
    bad = http.post("/api/queues/mail/locks/release", json={"keys": "x"}, headers=SAME)
    assert bad.status_code == 400
    assert http.post("/api/queues/nope/locks/release", json={"all": True},
                     headers=SAME).status_code == 404  # fmt: skip
    assert http.post("/locks", data={"queue": "mail"}, headers=SAME).status_code == 400


def test_throttles_and_debug_pages(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _srv, http, c = site
    c.call("PUSH " + job(queue="slow"))
    c.call("FETCH slow")
    assert http.get("/api/throttles").json() == {"slow": {"limit": 2, "per": "server", "in_use": 1}}
    assert "slow" in http.get("/throttles").text
    debug = http.get("/api/debug").json()
    assert debug["group_commits"]["count"] >= 1 and debug["wal_fsyncs"]["count"] >= 1
    assert debug["files"]["db"] > 0 and set(debug["checkpoints"]) == {
        "count", "mean_ms", "worst_ms",
    }  # fmt: skip
    page = http.get("/debug").text
    assert "hidden-pw" not in page and "hidden-web-pw" not in page
    assert "********" in page and "Checkpoints" in page


def test_debug_counts_checkpoints(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _srv, http, c = site
    big = "x" * 3000
    for i in range(40):  # ~5 MB of WAL: past the 1,000-page checkpoint threshold
        bodies = [json.loads(job(jid=f"big-job-{i}-{k}", args=[big])) for k in range(40)]
        assert c.call("PUSHB " + json.dumps(bodies)) == b"$2\r\n{}\r\n"
    assert http.get("/api/debug").json()["checkpoints"]["count"] >= 1


def test_busy_shows_tracked_progress(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _srv, http, c = site
    c.call("PUSH " + job(jid="tracked-job", custom={"track": 1}))
    c.call("FETCH default")
    body = {"jid": "tracked-job", "percent": 40, "desc": "Halfway-ish"}
    assert c.call("TRACK SET " + json.dumps(body)) == b"+OK\r\n"
    [running] = http.get("/api/workers").json()["jobs"]
    assert (running["percent"], running["desc"], running["wid"]) == (40, "Halfway-ish", "w-pages")
    page = http.get("/busy").text
    assert "Halfway-ish" in page and 'value="40"' in page


def test_job_timeline_follows_failures_retries_and_moves(
    site: tuple[RunningServer, httpx.Client, WireClient],
) -> None:
    _srv, http, c = site
    c.call("PUSH " + job(jid="flaky-job-1", jobtype="Flaky", queue="work"))
    c.call("FETCH work")
    c.call('FAIL {"jid":"flaky-job-1","errtype":"Timeout","message":"took too long"}')
    [entry] = http.get("/api/sets/retries").json()["jobs"]
    events = [e["event"] for e in http.get(f"/api/sets/retries/{entry['key']}").json()["timeline"]]
    assert events == ["pushed", "enqueued", "fetched", "failed", "next retry"]
    http.post("/api/sets/retries/actions", json={"action": "retry", "keys": [entry["key"]]},
              headers=SAME)  # fmt: skip
    c.call("FETCH work")
    c.call('FAIL {"jid":"flaky-job-1","errtype":"Timeout","message":"again"}')
    [entry] = http.get("/api/sets/retries").json()["jobs"]
    http.post("/api/sets/retries/actions", json={"action": "kill", "keys": [entry["key"]]},
              headers=SAME)  # fmt: skip
    [dead] = http.get("/api/sets/morgue").json()["jobs"]
    timeline = http.get(f"/api/sets/morgue/{dead['key']}").json()["timeline"]
    got = [(e["event"], e["detail"]) for e in timeline if e["event"] not in ("pushed", "enqueued")]
    assert [e for e, _ in got] == [
        "fetched", "failed", "moved", "fetched", "failed", "killed",
    ]  # fmt: skip
    assert got[0][1] == "from work by w-pages"
    assert got[1][1].startswith("Timeout: took too long; retry 1 at ")
    assert got[2][1] == "from retries to its queue by the Web UI"
    assert got[4][1].startswith("Timeout: again; retry 2 at ")
    assert got[-1][1] == "from retries to the dead set by the Web UI"
    page = http.get(f"/morgue/{dead['key']}").text
    assert "Timeline" in page and "from work by w-pages" in page


def test_a_job_that_succeeds_leaves_no_timeline_behind(
    site: tuple[RunningServer, httpx.Client, WireClient],
) -> None:
    _srv, http, c = site
    c.call("PUSH " + job(jid="comes-good", queue="work"))
    c.call("FETCH work")
    c.call('FAIL {"jid":"comes-good","errtype":"E","message":"first run"}')
    c.call('MUTATE {"cmd":"requeue","target":"retries","filter":{"jids":["comes-good"]}}')
    c.call("FETCH work")
    assert c.call('ACK {"jid":"comes-good"}') == b"+OK\r\n"
    # The same jid again: its timeline starts afresh, without the first run's events.
    c.call("PUSH " + job(jid="comes-good", queue="work"))
    c.call("FETCH work")
    c.call('FAIL {"jid":"comes-good","errtype":"E","message":"second run"}')
    [entry] = http.get("/api/sets/retries").json()["jobs"]
    timeline = http.get(f"/api/sets/retries/{entry['key']}").json()["timeline"]
    details = " ".join(e["detail"] for e in timeline)
    assert "second run" in details and "first run" not in details and "MUTATE" not in details


def test_sets_filter_by_tag(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _srv, http, c = site
    tagged: list[tuple[str, Any]] = [
        ("tagged-billing", ["billing", "eu"]), ("tagged-bill", ["bill"]),
        ("tagged-solo", "billing"), ("tagged-none", None), ("tagged-mention", ["other"]),
    ]  # fmt: skip
    for jid, tags in tagged:
        custom: dict[str, Any] = {"note": "billing"} if jid == "tagged-mention" else {}
        if tags is not None:
            custom["tags"] = tags
        c.call("PUSH " + job(jid=jid, at="2999-01-01T00:00:00Z", custom=custom))
    found = http.get("/api/sets/scheduled", params={"tag": "billing"}).json()["jobs"]
    assert sorted(j["jid"] for j in found) == ["tagged-billing", "tagged-solo"]
    text = http.get("/api/sets/scheduled", params={"q": "billing"}).json()["jobs"]
    assert len(text) == 3  # text search also matches the note
    page = http.get("/scheduled", params={"tag": "billing"}).text
    assert "tagged-billing" in page and "tagged-bill<" not in page and "Tagged" in page

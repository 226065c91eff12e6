"""The Web UI over real HTTP: pages, JSON API, auth, cross-site protection, bad input."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

import minifaktory
from minifaktory.app import RunningServer
from tests.conftest import WireClient, job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def web() -> Iterator[tuple[RunningServer, httpx.Client]]:
    with minifaktory.run(web_binding=f"127.0.0.1:{free_port()}") as srv:
        base = f"http://127.0.0.1:{srv.server.web_port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            yield srv, http


def push(srv: RunningServer, *bodies: str) -> None:
    c = WireClient(srv.host, srv.port)
    c.call("HELLO {}")
    for body in bodies:
        assert c.call("PUSH " + body) == b"+OK\r\n"
    c.close()


SAME = {"Sec-Fetch-Site": "same-origin"}


def test_health_and_stats(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    srv.run_due_tasks()  # task timings are Go-formatted floats in the JSON
    health = http.get("/health").json()
    assert list(health) == ["now", "server"]
    assert health["server"]["description"] == "Faktory"
    stats = http.get("/stats")
    assert stats.headers["cache-control"] == "no-cache"
    assert list(stats.json()) == ["now", "server_utc_time", "faktory", "server"]


def test_probes(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    assert http.get("/healthz").json()["server"]["description"] == "Faktory"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["store"]["last_write"]  # an idle server wrote its probe row
    assert srv.info()["server"]["store"]["writable"] is True


def test_dashboard_and_history(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job(queue="mail"))
    page = http.get("/")
    assert page.status_code == 200
    assert "Processed" in page.text and "mail" in page.text
    assert "width=device-width" in page.text
    assert len(http.get("/api/history?days=7").json()) == 7
    assert len(http.get("/api/history?days=999").json()) == 180
    assert len(http.get("/api/history?days=x").json()) == 30
    assert http.get("/static/app.css").status_code == 200


def test_queue_actions(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job(queue="mail"), job(jid="another-job-1", queue="mail"))
    assert http.get("/queues").status_code == 200
    reply = http.post("/queues", data={"queue": "mail", "action": "pause"}, headers=SAME)
    assert reply.status_code == 302
    [row] = http.get("/api/queues").json()
    assert row == {"name": "mail", "size": 2, "paused": True, "latency": row["latency"],
                   "unique_locks": 0}  # fmt: skip
    assert http.post("/api/queues/mail/resume", headers=SAME).json()["ok"] is True
    assert srv.info()["faktory"]["queues"] == {"mail": 2}
    assert http.post("/api/queues/mail/delete", headers=SAME).status_code == 200
    assert srv.info()["faktory"]["queues"] == {}


def test_bad_input_is_a_clear_error(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job())
    assert http.post("/api/queues/default/explode", headers=SAME).status_code == 400
    assert http.post("/api/queues/nope/pause", headers=SAME).json() == {
        "error": "No such queue 'nope'"
    }
    assert http.post("/queues", data={"queue": "default"}, headers=SAME).status_code == 400
    assert http.get("/api/queues/default/pause").status_code == 405
    for path in ("/api/cron/x/run", "/api/queues/default/locks/release"):
        assert http.get(path).status_code == 405, path  # no action by GET
    for path in ("/batches", "/throttles", "/api/locks", "/batches/b-1"):
        assert http.post(path, headers=SAME).status_code == 405, path
    assert http.get("/nowhere").status_code == 404
    # A paging cursor past SQLite's 64-bit integers, with and without a search.
    for query in ("", "&q=x", "&tag=t"):
        url = f"/api/sets/morgue?after=9521849467065963848.05{query}"
        assert http.get(url).status_code == 400, url
    assert srv.info()["faktory"]["queues"] == {"default": 1}


def test_cross_site_posts_are_refused(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job())
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert http.post("/api/queues/default/delete", headers=cross).status_code == 403
    evil = {"Origin": "http://evil.example"}
    assert http.post("/api/queues/default/delete", headers=evil).status_code == 403
    assert srv.info()["faktory"]["queues"] == {"default": 1}
    assert http.post("/api/queues/default/pause", headers=SAME).status_code == 200


def test_basic_auth() -> None:
    with minifaktory.run(password="s3cret", web_binding=f"127.0.0.1:{free_port()}") as srv:
        base = f"http://127.0.0.1:{srv.server.web_port}"
        with httpx.Client(base_url=base) as http:
            denied = http.get("/")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"] == 'Basic realm="Faktory"'
            assert denied.text == "Authorization required"
            assert http.get("/", auth=("any", "wrong")).text == "Authorization failed"
            assert http.get("/", auth=("any", "s3cret")).status_code == 200
            assert http.get("/health").status_code == 200
            assert http.get("/static/app.js").status_code == 200


def test_web_password_from_toml() -> None:
    toml = {"web": {"password": "webpw"}}
    with minifaktory.run(password="s3cret", toml=toml,
                         web_binding=f"127.0.0.1:{free_port()}") as srv:  # fmt: skip
        base = f"http://127.0.0.1:{srv.server.web_port}"
        with httpx.Client(base_url=base) as http:
            assert http.get("/", auth=("", "s3cret")).status_code == 401
            assert http.get("/", auth=("", "webpw")).status_code == 200


def test_port_zero_disables_the_web_ui() -> None:
    with minifaktory.run() as srv:
        assert srv.server.web_port == 0


def test_a_taken_web_port_leaves_the_job_server_running(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            caplog.at_level(logging.ERROR),
            minifaktory.run(web_binding=f"127.0.0.1:{port}") as srv,
        ):
            push(srv, job())
            assert srv.info()["faktory"]["queues"] == {"default": 1}
            assert srv.server.web_port == 0
    assert f"Web UI not started: cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "jobs are still served at tcp://127.0.0.1:" in caplog.text


def test_a_web_stack_that_fails_to_load_leaves_the_job_server_running(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minifaktory.webui import server as web_server

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("templates missing")

    monkeypatch.setattr(web_server, "WebServer", broken)
    port = free_port()
    with caplog.at_level(logging.ERROR), minifaktory.run(web_binding=f"127.0.0.1:{port}") as srv:
        with (
            contextlib.suppress(ConnectionResetError, BrokenPipeError),
            socket.create_connection(("127.0.0.1", srv.server.web_port), timeout=5) as page,
        ):
            page.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert page.recv(100) == b""  # closed (or reset): nothing serves the Web UI
        push(srv, job())
        assert srv.info()["faktory"]["queues"] == {"default": 1}
    assert "Web UI not started: its stack failed to load" in caplog.text
    assert "templates missing" in caplog.text


def test_unique_locks_are_listed_per_queue(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job(jid="locked-job-1", queue="mail", custom={"unique_for": 60}))
    [lock] = http.get("/api/queues/mail/locks").json()
    assert lock["jid"] == "locked-job-1" and len(lock["key"]) == 64
    assert http.get("/api/queues/other/locks").json() == []
    assert http.get("/api/queues").json()[0]["unique_locks"] == 1


def fail_jobs(srv: RunningServer, n: int, **fields: object) -> None:
    c = WireClient(srv.host, srv.port)
    c.call("HELLO {}")
    for i in range(n):
        c.call("PUSH " + job(jid=f"failing-{i:04d}", jobtype="Boom", args=[i], **fields))
        assert b"failing" in c.call("FETCH default")
        c.call(f'FAIL {{"jid":"failing-{i:04d}","errtype":"KeyError","message":"no key {i}"}}')
    c.close()


def test_retries_page_search_and_actions(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    fail_jobs(srv, 30)
    page = http.get("/retries")
    assert page.status_code == 200 and "KeyError: no key" in page.text
    listing = http.get("/api/sets/retries").json()
    assert len(listing["jobs"]) == 25 and listing["next_after"]
    rest = http.get("/api/sets/retries", params={"after": listing["next_after"]}).json()
    assert len(rest["jobs"]) == 5 and rest["next_after"] == ""
    keys = {j["key"] for j in listing["jobs"]} | {j["key"] for j in rest["jobs"]}
    assert len(keys) == 30
    found = http.get("/api/sets/retries", params={"q": "no key 17"}).json()["jobs"]
    assert [j["jid"] for j in found] == ["failing-0017"]
    one = found[0]
    detail = http.get(f"/retries/{one['key']}")
    assert detail.status_code == 200 and "failing-0017" in detail.text
    assert http.get(f"/api/sets/retries/{one['key']}").json()["error"] == "KeyError: no key 17"
    moved = http.post("/retries", data={"key": one["key"], "action": "retry"}, headers=SAME)
    assert moved.status_code == 302
    assert srv.info()["faktory"]["queues"] == {"default": 1}
    others = [j["key"] for j in listing["jobs"] if j["key"] != one["key"]]
    body = {"action": "kill", "keys": others[:3]}
    assert http.post("/api/sets/retries/actions", json=body, headers=SAME).json()["count"] == 3
    sets = srv.info()["faktory"]["sets"]
    assert (sets["retries"], sets["dead"]) == (26, 3)
    assert http.post("/api/sets/morgue/actions", json={"action": "delete", "all": True},
                     headers=SAME).json()["count"] == 3  # fmt: skip
    assert srv.info()["faktory"]["sets"]["dead"] == 0


def test_set_pages_bad_input(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    fail_jobs(srv, 1)
    assert http.get("/retries/999999").status_code == 404
    assert http.get("/retries/abc").status_code == 404
    assert http.get("/api/sets/retries", params={"after": "x"}).status_code == 400
    assert http.get("/api/sets/nothing").status_code == 404
    assert http.post("/retries", data={"action": "retry"}, headers=SAME).status_code == 400
    assert (
        http.post("/retries", data={"key": "1", "action": "zap"}, headers=SAME).status_code == 400
    )
    assert http.post("/api/sets/retries/actions", content=b"nope", headers=SAME).status_code == 400
    gone = http.post("/retries", data={"key": "999999", "action": "delete"}, headers=SAME)
    assert gone.status_code == 302  # a job that vanished meanwhile is skipped, as in Faktory
    assert http.get("/scheduled").status_code == 200
    assert http.get("/morgue").status_code == 200
    assert srv.info()["faktory"]["sets"]["retries"] == 1


def test_busy_page_and_worker_signals(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    worker = WireClient(srv.host, srv.port)
    worker.hello(wid="w-busy", hostname="box", pid=42, labels=["py"], v=2)
    worker.call("PUSH " + job())
    worker.call("FETCH default")
    page = http.get("/busy")
    assert page.status_code == 200 and "box:42" in page.text and "Thing" in page.text
    [info] = http.get("/api/workers").json()["workers"]
    assert (info["wid"], info["busy"], info["state"], info["late"]) == (
        "w-busy",
        1,
        "running",
        False,
    )
    assert (
        http.post("/busy", data={"wid": "w-busy", "signal": "quiet"}, headers=SAME).status_code
        == 302
    )
    assert worker.call('BEAT {"wid":"w-busy"}') == b'$17\r\n{"state":"quiet"}\r\n'
    assert http.post("/api/workers/all/terminate", headers=SAME).json() == {"ok": True}
    assert worker.call('BEAT {"wid":"w-busy"}') == b'$21\r\n{"state":"terminate"}\r\n'
    assert (
        http.post("/busy", data={"wid": "w-busy", "signal": "x"}, headers=SAME).status_code == 400
    )
    assert http.post("/api/workers/nobody/quiet", headers=SAME).status_code == 404
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert (
        http.post("/busy", data={"wid": "w-busy", "signal": "quiet"}, headers=cross).status_code
        == 403
    )
    worker.close()


def test_queue_page_lists_in_fetch_order_and_deletes(
    web: tuple[RunningServer, httpx.Client],
) -> None:
    srv, http = web
    bodies = [job(jid=f"queued-{i:04d}", args=[i]) for i in range(30)]
    bodies.append(job(jid="urgent-0001", priority=9, custom={"unique_for": 60}))
    push(srv, *bodies)
    first = http.get("/api/queues/default/jobs").json()
    assert first["jobs"][0]["jid"] == "urgent-0001" and first["jobs"][1]["jid"] == "queued-0000"
    second = http.get("/api/queues/default/jobs", params={"after": first["next_after"]}).json()
    assert [j["jid"] for j in second["jobs"]][-1] == "queued-0029"
    assert len(first["jobs"]) + len(second["jobs"]) == 31
    page = http.get("/queues/default")
    assert page.status_code == 200 and "urgent-0001" in page.text
    keys = {"key": [first["jobs"][0]["key"], first["jobs"][1]["key"]]}
    assert http.post("/queues/default", data=keys, headers=SAME).status_code == 302
    state = srv.info()["faktory"]
    assert state["queues"] == {"default": 29} and state["unique_locks"] == {}
    body = {"keys": [second["jobs"][-1]["key"], 999999]}
    deleted = http.post("/api/queues/default/jobs/delete", json=body, headers=SAME)
    assert deleted.json() == {"count": 1}
    assert http.get("/queues/nowhere").headers["location"].endswith("/queues")  # as Faktory
    assert http.get("/api/queues/nowhere/jobs").status_code == 404
    assert http.get("/api/queues/default/jobs", params={"after": "x"}).status_code == 400
    assert http.post("/queues/default", data={}, headers=SAME).status_code == 400


def test_edit_a_queued_job_in_place(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job(jid="first-job-01"), job(jid="editable-01", args=[1]), job(jid="last-job-01"))
    [_, target, _] = http.get("/api/queues/default/jobs").json()["jobs"]
    form_page = http.get(f"/queues/default/{target['key']}/edit")
    assert form_page.status_code == 200 and "editable-01" in form_page.text
    form = {"args": '[2, {"b": 1}]', "custom": '{"tag": "x"}', "queue": "default", "at": "",
            "priority": ""}  # fmt: skip
    done = http.post(f"/queues/default/{target['key']}/edit", data=form, headers=SAME)
    assert done.status_code == 302
    c = WireClient(srv.host, srv.port)
    c.call("HELLO {}")
    order = [json.loads(c.call("FETCH default").split(b"\r\n")[1]) for _ in range(3)]
    assert [j["jid"] for j in order] == ["first-job-01", "editable-01", "last-job-01"]
    assert order[1]["args"] == [2, {"b": 1}] and order[1]["custom"] == {"tag": "x"}
    c.close()


def test_edit_validates_like_push(web: tuple[RunningServer, httpx.Client]) -> None:
    srv, http = web
    push(srv, job(jid="editable-01"))
    [target] = http.get("/api/queues/default/jobs").json()["jobs"]
    url = f"/api/queues/default/jobs/{target['key']}"
    bad = [
        ({"args": None}, "jobs must have an args parameter"),
        ({"args": [], "queue": "no good"}, "queue names must match"),
        ({"args": [], "priority": 12}, "priority from 1 to 9"),
        ({"args": [], "at": "soon"}, "invalid timestamp for 'at'"),
        ({"args": [], "custom": {"unique_for": "x"}}, "invalid custom.unique_for"),
        ({"args": [], "custom": {"bid": "b-1"}}, "custom.bid cannot be edited"),
        ({"args": [], "jid": "x"}, "only args, custom, queue, at, priority can be edited"),
        ({"args": "nope"}, "invalid edit"),
    ]
    for body, message in bad:
        reply = http.post(url, json=body, headers=SAME)
        assert reply.status_code == 400, body
        assert message in reply.json()["error"], (body, reply.json())
    form = {"args": "[1", "custom": "", "queue": "", "at": "", "priority": ""}
    page = http.post(f"/queues/default/{target['key']}/edit", data=form, headers=SAME)
    assert page.status_code == 400 and "args is not valid JSON" in page.text
    assert http.get("/queues/default/999999/edit").status_code == 404
    moved = http.post(url, json={"args": [5], "queue": "other", "priority": 7}, headers=SAME)
    assert moved.json()["queue"] == "other" and moved.json()["priority"] == 7
    assert srv.info()["faktory"]["queues"] == {"default": 0, "other": 1}
    later = http.post(f"/api/queues/other/jobs/{target['key']}",
                      json={"args": [5], "at": "2999-01-01T00:00:00Z"}, headers=SAME)  # fmt: skip
    assert later.status_code == 200
    state = srv.info()["faktory"]
    assert (state["queues"]["other"], state["sets"]["scheduled"]) == (0, 1)


def test_busy_shows_each_workers_recent_jobs_and_sets_show_tags(
    web: tuple[RunningServer, httpx.Client],
) -> None:
    srv, http = web
    worker = WireClient(srv.host, srv.port)
    worker.hello(wid="w-history", v=2)
    worker.call("PUSH " + job(jid="done-job-01", jobtype="Works"))
    worker.call("PUSH " + job(jid="bad-job-001", jobtype="Breaks", custom={"tags": ["billing", 3]}))
    worker.call("FETCH default")
    worker.call('ACK {"jid":"done-job-01"}')
    worker.call("FETCH default")
    worker.call('FAIL {"jid":"bad-job-001"}')
    [info] = http.get("/api/workers").json()["workers"]
    assert [(r["jid"], r["outcome"], r["jobtype"]) for r in info["recent"]] == [
        ("bad-job-001", "failed", "Breaks"), ("done-job-01", "success", "Works"),
    ]  # fmt: skip
    assert "Last 2 jobs of w-history" in http.get("/busy").text
    [entry] = http.get("/api/sets/retries").json()["jobs"]
    assert entry["tags"] == ["billing"]
    assert 'href="?tag=billing"' in http.get("/retries").text
    worker.close()

"""Cron: parsing every schedule form, firing on a fake clock, restarts, reload sources."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

import minifaktory
from minifaktory.clock import NS, FakeClock, parse_ns
from minifaktory.config import load_config
from minifaktory.cron import CronEntry, parse_cron
from minifaktory.errors import ConfigError
from tests.conftest import WireClient

T0 = parse_ns("2026-07-01T10:00:30Z")

FIVE = """
[[cron]]
  schedule = "*/5 * * * *"
  [cron.job]
    type = "FiveJob"
    queue = "critical"
    retry = 3
    reserve_for = 4000
    args = [1, "two"]
    [cron.job.custom]
      foo = "bar"
"""


def entries(text: str, sources: tuple[str, ...] = ()) -> list[CronEntry]:
    return parse_cron(tomllib.loads(text), sources)


def one(schedule: str, **job: Any) -> CronEntry:
    body = {"type": "J", **job}
    return parse_cron({"cron": [{"schedule": schedule, "job": body}]})[0]


def test_table_form() -> None:
    [entry] = entries(FIVE)
    job = entry.make_job()
    assert (job.jobtype, job.queue, job.retry, job.reserve_for) == ("FiveJob", "critical", 3, 4000)
    assert job.args == [1, "two"] and job.custom == {"foo": "bar"}
    assert len(job.jid) == 16 and job.jid != entry.make_job().jid


def test_args_tables_form() -> None:
    [entry] = entries(
        """
[[cron]]
  schedule = "@hourly"
  [cron.job]
    type = "Report"
    [[cron.job.args]]
      account = 1
    [[cron.job.args]]
      account = 2
"""
    )
    assert entry.make_job().args == [{"account": 1}, {"account": 2}]


@pytest.mark.parametrize(
    ("schedule", "after", "first"),
    [
        ("*/5 * * * *", "2026-07-01T10:00:30Z", "2026-07-01T10:05:00Z"),
        ("*/10 * * * * *", "2026-07-01T10:00:30Z", "2026-07-01T10:00:40Z"),
        ("@hourly", "2026-07-01T10:00:30Z", "2026-07-01T11:00:00Z"),
        ("@daily", "2026-07-01T10:00:30Z", "2026-07-02T00:00:00Z"),
        ("@midnight", "2026-07-01T10:00:30Z", "2026-07-02T00:00:00Z"),
        ("@weekly", "2026-07-01T10:00:30Z", "2026-07-05T00:00:00Z"),
        ("@monthly", "2026-07-01T10:00:30Z", "2026-08-01T00:00:00Z"),
        ("@yearly", "2026-07-01T10:00:30Z", "2027-01-01T00:00:00Z"),
        ("@annually", "2026-07-01T10:00:30Z", "2027-01-01T00:00:00Z"),
        ("@every 90s", "2026-07-01T10:00:30Z", "2026-07-01T10:02:00Z"),
        ("@every 1h30m", "2026-07-01T10:00:30Z", "2026-07-01T11:30:30Z"),
    ],
)
def test_next_firing(schedule: str, after: str, first: str) -> None:
    assert one(schedule).next_after(parse_ns(after)) == parse_ns(first)


def test_time_zone() -> None:
    entry = parse_cron({"cron": [{"schedule": "0 9 * * *", "timezone": "Europe/Berlin",
                                  "job": {"type": "J"}}]})[0]  # fmt: skip
    assert entry.next_after(parse_ns("2026-07-01T00:00:00Z")) == parse_ns("2026-07-01T07:00:00Z")
    document = {
        "cron_settings": {"timezone": "America/New_York"},
        "cron": [{"schedule": "0 9 * * *", "job": {"type": "J"}}],
    }
    default = parse_cron(document)[0]
    assert default.next_after(parse_ns("2026-07-01T00:00:00Z")) == parse_ns("2026-07-01T13:00:00Z")


def test_latest_due_runs_a_missed_firing_once() -> None:
    entry = one("*/5 * * * *")
    last = parse_ns("2026-07-01T10:00:00Z")
    assert entry.latest_due(parse_ns("2026-07-01T10:04:59Z"), last) is None
    assert entry.latest_due(parse_ns("2026-07-01T10:05:00Z"), last) == parse_ns(
        "2026-07-01T10:05:00Z"
    )
    assert entry.latest_due(parse_ns("2026-07-01T10:31:10Z"), last) == parse_ns(
        "2026-07-01T10:30:00Z"
    )
    every = one("@every 10s")
    assert every.latest_due(last + 35 * NS, last) == last + 30 * NS


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"job": {"type": "J"}}, "schedule is required"),
        ({"schedule": "61 * * * *", "job": {"type": "J"}}, "not a valid 5- or 6-field"),
        ({"schedule": "* * *", "job": {"type": "J"}}, "not a valid 5- or 6-field"),
        ({"schedule": "@sometimes", "job": {"type": "J"}}, "unknown schedule macro"),
        ({"schedule": "@every soon", "job": {"type": "J"}}, "@every needs a duration"),
        ({"schedule": "@every 10ms", "job": {"type": "J"}}, "at least 1s"),
        ({"schedule": "@hourly"}, r"\[cron.job\] table is required"),
        ({"schedule": "@hourly", "job": {}}, "type is required"),
        ({"schedule": "@hourly", "job": {"type": "J", "kind": 1}}, "unknown"),
        ({"schedule": "@hourly", "job": {"type": "J", "args": 5}}, "args has the wrong type"),
        ({"schedule": "@hourly", "job": {"type": "J", "queue": "no good"}}, "queue names must"),
        ({"schedule": "@hourly", "job": {"type": "J", "reserve_for": 90000}}, "one day"),
        ({"schedule": "@hourly", "timezone": "Mars/Base", "job": {"type": "J"}}, "time zone"),
        ({"schedule": "@hourly", "every": 1, "job": {"type": "J"}}, "unknown key"),
    ],
)
def test_bad_entries_are_named(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_cron({"cron": [{"schedule": "@daily", "job": {"type": "OK"}}, entry]},
                   ("a.toml", "b.toml"))  # fmt: skip
    assert str(info.value).startswith("b.toml: [[cron]] entry 2")


def test_conf_d_files_merge_and_errors_name_the_file(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "a.toml").write_text('[[cron]]\nschedule = "@hourly"\n[cron.job]\ntype = "OneJob"\n')
    (conf_d / "b.toml").write_text('[[cron]]\nschedule = "@daily"\n[cron.job]\ntype = "TwoJob"')
    config = load_config(["-c", str(tmp_path)], {"HOME": str(tmp_path)})
    assert config.cron_sources == (str(conf_d / "a.toml"), str(conf_d / "b.toml"))
    assert [e.job["type"] for e in parse_cron(config.toml)] == ["OneJob", "TwoJob"]
    (conf_d / "c.toml").write_text('[[cron]]\nschedule = "@often"\n[cron.job]\ntype = "Bad"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: \[\[cron\]\] entry 3 \('@often'\)"):
        load_config(["-c", str(tmp_path)], {"HOME": str(tmp_path)})


def fetch_all(srv: minifaktory.RunningServer, queue: str) -> list[dict[str, Any]]:
    c = WireClient(srv.host, srv.port)
    c.call("HELLO {}")
    jobs = []
    while (reply := c.call(f"FETCH {queue}")) != b"$-1\r\n":
        jobs.append(json.loads(reply.split(b"\r\n")[1]))
    c.close()
    return jobs


def test_firing_on_schedule_and_across_restarts(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    db = tmp_path / "cron.db"
    toml = tomllib.loads(FIVE)
    options: dict[str, Any] = {"db_path": db, "clock": clock, "toml": toml, "fetch_timeout": 0.05}
    with minifaktory.run(**options) as srv:
        srv.run_due_tasks()  # registers the entry at 10:00:30
        assert fetch_all(srv, "critical") == []
        clock.advance(4 * 60 + 29)  # 10:04:59
        srv.run_due_tasks()
        assert fetch_all(srv, "critical") == []
        clock.advance(1)  # 10:05:00
        srv.run_due_tasks()
        srv.run_due_tasks()
        [fired] = fetch_all(srv, "critical")
        assert (fired["jobtype"], fired["args"], fired["retry"]) == ("FiveJob", [1, "two"], 3)
        info = srv.info()["faktory"]
        assert info["cron"] == [{
            "schedule": "*/5 * * * *", "jobtype": "FiveJob", "queue": "critical",
            "last_at": "2026-07-01T10:05:00Z", "next_at": "2026-07-01T10:10:00Z",
        }]  # fmt: skip
        assert info["tasks"]["Cron"]["enqueued"] == 1
    clock.advance(26 * 60)  # down from 10:05 to 10:31: the missed firings run once
    with minifaktory.run(**options) as srv:
        srv.run_due_tasks()
        srv.run_due_tasks()
        assert len(fetch_all(srv, "critical")) == 1
    with minifaktory.run(**options) as srv:  # an immediate restart does not repeat it
        srv.run_due_tasks()
        assert fetch_all(srv, "critical") == []


def test_reload_replaces_cron_and_throttles(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "cron.toml").write_text(FIVE)
    argv = ["-c", str(tmp_path), "--db", str(tmp_path / "r.db"), "-b", "127.0.0.1:0", "-w", ":0"]
    config = load_config(argv, {"HOME": str(tmp_path)})
    with minifaktory.run(config) as srv:
        assert len(srv.info()["faktory"]["cron"]) == 1
        (conf_d / "cron.toml").write_text(FIVE + FIVE.replace("FiveJob", "OtherJob"))
        (conf_d / "throttles.toml").write_text(
            "[throttles]\nslow = { concurrency = 1, timeout = 9 }\n"
        )

        async def reload() -> None:
            srv.server.reload()

        srv.call(reload())
        info = srv.info()["faktory"]
        assert [e["jobtype"] for e in info["cron"]] == ["FiveJob", "OtherJob"]
        assert info["throttles"] == {"slow": {"limit": 1, "per": "server", "in_use": 0}}
        (conf_d / "cron.toml").write_text('[[cron]]\nschedule = "bad"\n')
        srv.call(reload())
        assert len(srv.info()["faktory"]["cron"]) == 2  # a bad file keeps the old entries

"""The pytest plugin, tested with pytester: fixtures, isolation, helpers, time travel,
and the external-server option."""

from __future__ import annotations

import pytest

import minifaktory

pytest_plugins = ["pytester"]

APP_TESTS = """
import os
import pytest
from minifaktory import Client


def test_a_pushes(faktory):
    assert os.environ["FAKTORY_URL"] == faktory.url
    with Client() as c:  # the code under test finds the server through FAKTORY_URL
        c.push({"jobtype": "Welcome", "args": ["ann@example.com"], "queue": "mail"})
    job = faktory.assert_enqueued("Welcome", ["ann@example.com"], queue="mail")
    assert job["queue"] == "mail"


def test_b_starts_clean(faktory):
    assert faktory.client.info()["faktory"]["queues"] == {}


def test_drain_runs_jobs_and_the_jobs_they_push(faktory):
    done = []

    def signup(email):
        done.append(("signup", email))
        faktory.push({"jobtype": "Welcome", "args": [email]})

    async def welcome(email):
        done.append(("welcome", email))

    def broken():
        raise RuntimeError("nope")

    faktory.push({"jobtype": "Signup", "args": ["bo@example.com"]})
    faktory.push({"jobtype": "Broken", "retry": 1})
    ran = faktory.drain({"Signup": signup, "Welcome": welcome, "Broken": broken})
    assert ran == 3
    assert done == [("signup", "bo@example.com"), ("welcome", "bo@example.com")]
    [failed] = faktory.jobs("retries")
    assert failed["failure"]["errtype"] == "RuntimeError"


def test_time_travel(faktory):
    faktory.push({"jobtype": "Later", "at": "2999-01-01T00:00:00Z"})
    faktory.push({"jobtype": "Soon", "at": __import__("minifaktory").clock.format_ns(
        __import__("time").time_ns() + 3600 * 10**9)})
    assert len(faktory.jobs("scheduled")) == 2
    faktory.travel(3601)
    assert [j["jobtype"] for j in faktory.jobs("default")] == ["Soon"]
    faktory.drain({"Soon": lambda: 1 / 0})
    assert len(faktory.jobs("retries")) == 1
    faktory.travel(3 * 24 * 3600)  # past any first retry delay
    assert [j["jobtype"] for j in faktory.jobs("default")] == ["Soon"]


def test_assert_enqueued_explains(faktory):
    faktory.push({"jobtype": "Other", "args": [1]})
    with pytest.raises(pytest.fail.Exception, match=r"found 0; waiting: Other\\(1,\\)"):
        faktory.assert_enqueued("Welcome")


def test_own_server(faktory_server_factory):
    server = faktory_server_factory(password="s3cret")
    assert ":s3cret@" in server.url
    with Client(server.url) as c:
        c.push({"jobtype": "Private"})
    assert server.info()["faktory"]["queues"] == {"default": 1}
"""


def test_fixtures_in_an_app_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=6)


def test_against_an_external_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TESTS)
    with minifaktory.run() as external:
        result = pytester.runpytest_subprocess("-q", f"--faktory-url={external.url}")
    # Pushing, draining and a server of its own work anywhere; listing jobs and time
    # travel need the embedded server.
    result.assert_outcomes(passed=2, skipped=4)

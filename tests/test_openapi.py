"""The JSON API's OpenAPI description: served, well-formed, and true for every path."""

from __future__ import annotations

import re
import socket
from typing import Any

import httpx

import minifaktory
from tests.conftest import WireClient, job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_documented_path_answers_as_documented() -> None:
    with minifaktory.run(web_binding=f"127.0.0.1:{free_port()}") as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        c.call("PUSH " + job(queue="q"))
        c.call("PUSH " + job(jid="failing-api-1"))
        c.call("FETCH default")
        c.call('FAIL {"jid":"failing-api-1"}')
        c.close()
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.server.web_port}") as http:
            spec: dict[str, Any] = http.get("/api/openapi.json").json()
            assert spec["openapi"].startswith("3.")
            values = {"name": "q", "set": "retries", "action": "pause", "wid": "all",
                      "signal": "quiet", "key": "1", "bid": "b-none"}  # fmt: skip
            for path, operations in spec["paths"].items():
                url = re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)
                for method, operation in operations.items():
                    assert operation["responses"]["200"]["description"]
                    if method == "get":
                        reply = http.get(url)
                        assert reply.status_code in (200, 404), (path, reply.text)
                        if reply.status_code == 200:
                            assert reply.headers["content-type"].startswith("application/json")
                            schema = operation["responses"]["200"]["content"]
                            kind = schema["application/json"]["schema"]["type"]
                            assert isinstance(reply.json(), {"object": dict, "array": list}[kind])
                    else:
                        refused = http.post(url, headers={"Sec-Fetch-Site": "cross-site"})
                        assert refused.status_code == 403, path


def test_api_against_its_description_with_schemathesis() -> None:
    """Generated requests for every operation: no 5xx, only documented codes and shapes."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    with minifaktory.run(web_binding=f"127.0.0.1:{free_port()}") as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        for i in range(3):
            c.call("PUSH " + job(jid=f"api-job-{i:04d}", queue="q", custom={"unique_for": 60}))
        c.call("PUSH " + job(jid="failing-api-1"))
        c.call("FETCH default")
        c.call('FAIL {"jid":"failing-api-1"}')
        c.close()
        base = f"http://127.0.0.1:{srv.server.web_port}"
        schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
        failures: list[str] = []
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here

            @given(operation.as_strategy())
            @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                case.call_and_validate(headers={"Sec-Fetch-Site": "same-origin"})

            try:
                check()
            except Exception as exc:  # collect every operation's failure, then report
                failures.append(f"{operation.label}: {exc}")
        assert not failures, "\n\n".join(failures)

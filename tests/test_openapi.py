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
                      "signal": "quiet", "key": "1"}  # fmt: skip
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

"""The blocking client: reply parsing at every split, URLs, and commands against a server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifaktory
from minifaktory.client import (
    AsyncClient,
    AsyncPool,
    Client,
    ConnectionFailed,
    FaktoryError,
    NotUnique,
    Pool,
    ServerError,
    parse_url,
    url_from_env,
)
from minifaktory.protocol import Reply, ReplyReader

STREAM = b'+HI {"v":2}\r\n+OK\r\n$-1\r\n$2\r\n{}\r\n-NOTUNIQUE Job not unique\r\n$5\r\na\r\nbc\r\n'
REPLIES = [
    Reply("+", b'HI {"v":2}'), Reply("+", b"OK"), Reply("$", None), Reply("$", b"{}"),
    Reply("-", b"NOTUNIQUE Job not unique"), Reply("$", b"a\r\nbc"),
]  # fmt: skip


def test_replies_at_every_split() -> None:
    for cut in range(len(STREAM) + 1):
        reader = ReplyReader()
        assert reader.feed(STREAM[:cut]) + reader.feed(STREAM[cut:]) == REPLIES, cut
    reader = ReplyReader()
    assert [r for i in range(len(STREAM)) for r in reader.feed(STREAM[i : i + 1])] == REPLIES


@given(st.lists(st.integers(1, 7), max_size=40))
def test_replies_in_any_chunks(sizes: list[int]) -> None:
    reader, out, at = ReplyReader(), [], 0
    for size in sizes:
        out += reader.feed(STREAM[at : at + size])
        at += size
    out += reader.feed(STREAM[at:])
    assert out == REPLIES


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Faktory reply"):
        ReplyReader().feed(b"HTTP/1.1 400 Bad Request\r\n")


def test_urls_and_environment() -> None:
    where = parse_url("tcp+tls://:s%40cret@jobs.example:7500")
    assert (where.host, where.port, where.password, where.tls) == (
        "jobs.example", 7500, "s@cret", True,
    )  # fmt: skip
    assert where.display == "tcp+tls://jobs.example:7500"
    assert parse_url("localhost").port == 7419
    with pytest.raises(FaktoryError, match="scheme"):
        parse_url("http://x")
    assert url_from_env({}) == "tcp://localhost:7419"
    assert url_from_env({"FAKTORY_URL": "tcp://a:1"}) == "tcp://a:1"
    assert url_from_env({"FAKTORY_PROVIDER": "MY_URL", "MY_URL": "tcp://b:2"}) == "tcp://b:2"
    with pytest.raises(FaktoryError, match="names the variable"):
        url_from_env({"FAKTORY_PROVIDER": "tcp://c:3"})


def test_commands_against_a_server() -> None:
    with minifaktory.run(password="pw-for-client") as srv, Client(srv.url) as c:
        jid = c.push({"jobtype": "Email", "args": [1], "custom": {"unique_for": 60}})
        with pytest.raises(NotUnique):
            c.push({"jobtype": "Email", "args": [1], "custom": {"unique_for": 60}})
        assert c.push_bulk([{"jobtype": "A"}, {"jid": "x", "jobtype": "B"}]) == {
            "x": "jobs must have a reasonable jid parameter"
        }
        job = c.fetch("default")
        assert job is not None and job["jid"] == jid
        c.fail(jid, "RuntimeError", "boom", ["line 1"])
        assert c.info()["faktory"]["sets"]["retries"] == 1
        c.queue("pause", "default")
        assert c.call("NOPE") == Reply("-", b"ERR unknown command NOPE")
        with pytest.raises(ServerError) as raised:
            c.queue("explode", "default")
        assert raised.value.code == "ERR"
        c.mutate({"cmd": "discard", "target": "retries"})
        c.flush()
        assert c.info()["faktory"]["sets"]["retries"] == 0


def test_worker_connection_beats() -> None:
    with minifaktory.run() as srv, Client(srv.url, wid="w-client-1", labels=["py"]) as c:
        assert c.beat() == ""
        assert srv.server.services is not None
        srv.server.services.registry.signal("w-client-1", "quiet")
        assert c.beat() == "quiet"


def test_connection_errors() -> None:
    with minifaktory.run(password="right") as srv:
        with pytest.raises(FaktoryError, match="requires a password"):
            Client(f"tcp://{srv.host}:{srv.port}")
        with pytest.raises(ServerError, match="Invalid password"):
            Client(f"tcp://:wrong@{srv.host}:{srv.port}")
        port = srv.port
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        Client(f"tcp://127.0.0.1:{port}", timeout=1)


def test_the_async_client() -> None:
    async def scenario(url: str, host: str, port: int) -> None:
        async with AsyncClient(url, wid="w-async-1") as c:
            jids = await asyncio.gather(*(c.push({"jobtype": "A", "args": [i]}) for i in range(20)))
            assert len(set(jids)) == 20  # one command at a time: every reply matched
            await c.push({"jobtype": "U", "custom": {"unique_for": 60}})
            with pytest.raises(NotUnique):
                await c.push({"jobtype": "U", "custom": {"unique_for": 60}})
            assert await c.push_bulk([{"jid": "short", "jobtype": "B"}]) == {
                "short": "jobs must have a reasonable jid parameter"
            }
            job = await c.fetch("default")
            assert job is not None and job["jid"] == jids[0]
            await c.fail(jids[0], "E", "m")
            job = await c.fetch("default")
            assert job is not None
            await c.ack(job["jid"])
            assert (await c.info())["faktory"]["total_processed"] == 2
            assert await c.beat() == ""
            await c.queue("pause", "default")
            await c.mutate({"cmd": "clear", "target": "retries"})
            assert await c.call("NOPE") == Reply("-", b"ERR unknown command NOPE")
            await c.flush()
        with pytest.raises(ServerError, match="Invalid password"):
            await AsyncClient(f"tcp://:wrong@{host}:{port}").connect()
        with pytest.raises(FaktoryError, match="requires a password"):
            await AsyncClient(f"tcp://{host}:{port}").connect()

    with minifaktory.run(password="pw-async") as srv:
        asyncio.run(scenario(srv.url, srv.host, srv.port))
        port = srv.port

    async def refused() -> None:
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await AsyncClient(f"tcp://127.0.0.1:{port}", timeout=1).connect()

    asyncio.run(refused())


def test_batches_through_the_client() -> None:
    with minifaktory.run() as srv, Client(srv.url) as c:
        bid = c.batch_new({"description": "import",
                           "success": {"jobtype": "Done", "args": []}})  # fmt: skip
        c.push({"jobtype": "Part", "custom": {"bid": bid}})
        c.batch_commit(bid)
        status = c.batch_status(bid)
        assert (status["bid"], status["total"], status["pending"]) == (bid, 1, 1)
        c.batch_open(bid)
        with pytest.raises(ServerError, match="No such batch"):
            c.batch_status("b-nope")


def test_pools_share_a_few_connections() -> None:
    with minifaktory.run() as srv:
        pool = Pool(srv.url, size=3)
        results: list[str] = []

        def push(i: int) -> None:
            with pool.client() as c:
                results.append(c.push({"jobtype": "P", "args": [i]}))

        threads = [threading.Thread(target=push, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(set(results)) == 20
        assert srv.info()["server"]["connections"] <= 3
        pool.close()

        async def tasks() -> int:
            apool = AsyncPool(srv.url, size=2)
            jids: list[str] = []

            async def one(i: int) -> None:
                async with apool.client() as c:
                    jids.append(await c.push({"jobtype": "A", "args": [i]}))

            await asyncio.gather(*(one(i) for i in range(10)))
            await apool.close()
            return len(set(jids))

        assert asyncio.run(tasks()) == 10
        assert srv.info()["faktory"]["queues"]["default"] == 30

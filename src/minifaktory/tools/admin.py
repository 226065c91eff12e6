"""Fixing jobs from a shell: ``minifaktory info | queues | queue | jobs | workers``.

These talk to a running server through its Web UI's JSON API (the same actions
as the pages, one transaction each), so they never touch the database file
behind the server's back. ``--web URL`` (default ``$MINIFAKTORY_WEB_URL``, else
``http://localhost:7420``) says where; the password comes from ``--password``,
the URL (``http://:pw@host:7420``) or ``FAKTORY_PASSWORD``. Tables for people,
``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_WEB_URL = "http://localhost:7420"
SETS = ("retries", "scheduled", "dead", "morgue")
TIMEOUT = 30.0


class AdminError(Exception):
    """A failure to report in one line (exit status 1)."""


class Api:
    """The server's JSON API over HTTP (standard library only)."""

    def __init__(self, url: str, password: str) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise AdminError(f"--web must be an http:// or https:// URL, not {url!r}")
        self.password = urllib.parse.unquote(parts.password or "") or password
        netloc = parts.hostname or "localhost"
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        self.base = f"{parts.scheme}://{netloc}:{parts.port or 7420}"

    def get(self, path: str, **query: str) -> Any:
        params = {k: v for k, v in query.items() if v}
        suffix = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self._send("GET", path + suffix, None)

    def post(self, path: str, body: Any = None) -> Any:
        return self._send("POST", path, {} if body is None else body)

    def _send(self, method: str, path: str, body: Any) -> Any:
        data = None if body is None else json.dumps(body).encode()
        # The scheme was checked in __init__: http or https only.
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.password:
            token = base64.b64encode(f":{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise AdminError(
                    f"{self.base} wants the web password: --password or FAKTORY_PASSWORD"
                ) from None
            try:
                message = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError):
                message = exc.reason
            raise AdminError(f"{exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(
                f"cannot reach the Web UI at {self.base} ({reason}); is -w enabled?"
            ) from None


# -- shared plumbing -------------------------------------------------------------------


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"minifaktory {prog}", description=description)
    _common(parser)
    return parser


def _common(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """--web, --password, --json (subcommands pass ``default=SUPPRESS`` so that the
    value given before the subcommand is kept)."""
    parser.add_argument("--web", help=f"the Web UI's URL (default {DEFAULT_WEB_URL})", **defaults)
    parser.add_argument(
        "--password", help="the web password (default FAKTORY_PASSWORD)", **defaults
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table", **defaults
    )


def _run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    environ: Mapping[str, str],
    act: Callable[[Api, argparse.Namespace], Any],
) -> int:
    args = parser.parse_args(argv)
    url = args.web or environ.get("MINIFAKTORY_WEB_URL") or DEFAULT_WEB_URL
    try:
        api = Api(url, args.password or _password(environ))
        out = act(api, args)
    except AdminError as exc:
        print(f"{parser.prog}: {exc}")
        return 1
    if isinstance(out, str):
        print(out)
    elif out is not None:
        print(json.dumps(out, indent=2))
    return 0


def _password(environ: Mapping[str, str]) -> str:
    password = environ.get("FAKTORY_PASSWORD", "")
    if password.startswith("/"):
        try:
            return Path(password).read_text().strip()
        except OSError as exc:
            raise AdminError(f"cannot read the password file {password}: {exc}") from None
    return password


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as aligned text columns: ``columns`` is [(key, heading)]."""
    if not rows:
        return "(none)"
    cells = [[heading for _, heading in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, list | dict):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- info, queues, queue -----------------------------------------------------------------


def info(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``minifaktory info``: totals, sets and the server's figures."""

    def act(api: Api, args: argparse.Namespace) -> Any:
        state = api.get("/api/info")
        if args.json:
            return state
        faktory, server = state["faktory"], state["server"]
        sets = faktory["sets"]
        rows = [
            ("server", f"{server['description']} {server['faktory_version']}"),
            ("uptime", f"{server['uptime']} s"), ("connections", server["connections"]),
            ("processed", faktory["total_processed"]), ("failed", faktory["total_failures"]),
            ("enqueued", faktory["total_enqueued"]), ("queues", faktory["total_queues"]),
            ("busy", sets["working"]), ("scheduled", sets["scheduled"]),
            ("retries", sets["retries"]), ("dead", sets["dead"]),
        ]  # fmt: skip
        return table([{"k": k, "v": v} for k, v in rows], [("k", "what"), ("v", "value")])

    return _run(_parser("info", "Totals of a running server."), argv, environ, act)


def queues(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``minifaktory queues``: every queue."""

    def act(api: Api, args: argparse.Namespace) -> Any:
        rows = api.get("/api/queues")
        if args.json:
            return rows
        return table(rows, [("name", "queue"), ("size", "size"), ("latency", "latency s"),
                            ("paused", "paused"), ("unique_locks", "locks")])  # fmt: skip

    return _run(_parser("queues", "Queues with size, latency and state."), argv, environ, act)


def queue(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``minifaktory queue pause|resume|clear NAME...``."""
    parser = _parser("queue", "Pause, resume or clear (delete every job of) queues.")
    parser.add_argument("action", choices=("pause", "resume", "clear"))
    parser.add_argument("names", nargs="+", metavar="NAME")

    def act(api: Api, args: argparse.Namespace) -> Any:
        verb = "delete" if args.action == "clear" else args.action
        done = [api.post(f"/api/queues/{_quote(name)}/{verb}") for name in args.names]
        return done if args.json else f"{args.action}: {', '.join(args.names)}"

    return _run(parser, argv, environ, act)


# -- workers -----------------------------------------------------------------------------


def workers(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``minifaktory workers [quiet|terminate WID|all]``."""
    parser = _parser("workers", "List worker processes, or quiet or terminate them.")
    parser.add_argument("signal", nargs="?", choices=("quiet", "terminate"))
    parser.add_argument("wid", nargs="?", help="a worker id, or all")

    def act(api: Api, args: argparse.Namespace) -> Any:
        if args.signal:
            if not args.wid:
                raise AdminError(f"which worker? minifaktory workers {args.signal} WID|all")
            api.post(f"/api/workers/{_quote(args.wid)}/{args.signal}")
            return {"ok": True} if args.json else f"{args.signal}: {args.wid} (on its next BEAT)"
        listed = api.get("/api/workers")
        if args.json:
            return listed
        rows = [{**w, "name": f"{w['hostname']}:{w['pid']}"} for w in listed["workers"]]
        return table(rows, [("wid", "wid"), ("name", "process"), ("state", "state"),
                            ("last_beat", "last beat"), ("late", "late"),
                            ("busy", "busy")])  # fmt: skip

    return _run(parser, argv, environ, act)


# -- jobs --------------------------------------------------------------------------------


def jobs(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``minifaktory jobs list|show|edit|delete|retry|kill ...``."""
    parser = _parser("jobs", "Jobs in a set (retries, scheduled, dead) or a queue.")
    sub = parser.add_subparsers(dest="command", required=True)
    where = "retries, scheduled, dead, or a queue name (queue:NAME if it clashes)"
    listing = sub.add_parser("list", help="list jobs")
    _common(listing, default=argparse.SUPPRESS)
    listing.add_argument("where", help=where)
    listing.add_argument("-q", "--search", default="", help="text in jobtype, jid, error, args")
    listing.add_argument("--tag", default="", help="only jobs with this custom.tags tag")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = sub.add_parser("show", help="one job's whole payload")
    _common(show, default=argparse.SUPPRESS)
    show.add_argument("where", help=where)
    show.add_argument("job", help="the job's jid or key")
    edit = sub.add_parser("edit", help="edit a waiting job in place (PUSH rules apply)")
    _common(edit, default=argparse.SUPPRESS)
    edit.add_argument("where", metavar="queue")
    edit.add_argument("job", help="the job's jid or key")
    for field in ("args", "custom"):
        edit.add_argument(f"--{field}", help=f"new {field} (JSON)")
    edit.add_argument("--queue", dest="to_queue", help="move it to this queue")
    edit.add_argument("--at", help="run it at this time (RFC 3339); '' for now")
    edit.add_argument("--priority", type=int, help="1 to 9")
    for verb, text in (("delete", "delete jobs"), ("retry", "enqueue jobs of a set now"),
                       ("kill", "move jobs of a set to the dead set")):  # fmt: skip
        act_parser = sub.add_parser(verb, help=text)
        _common(act_parser, default=argparse.SUPPRESS)
        act_parser.add_argument("where", help=where)
        act_parser.add_argument("jobs", nargs="*", metavar="JOB", help="jids or keys")
        act_parser.add_argument("--all", action="store_true", help="every job of the set")

    def act(api: Api, args: argparse.Namespace) -> Any:
        target = Target.parse(args.where)
        if args.command == "list":
            found = list(target.jobs(api, args.search, args.tag, max(args.limit, 1)))
            if args.json:
                return found
            when = "at" if target.set else "priority"
            return table(found, [("key", "key"), ("jid", "jid"), (when, when),
                                 ("jobtype", "jobtype"), ("queue", "queue"), ("args", "args"),
                                 ("error", "error")])  # fmt: skip
        if args.command == "show":
            return target.find(api, args.job)
        if args.command == "edit":
            return target.edit(api, args)
        return target.act(api, args.command, args.jobs, args.all, args.json)

    return _run(parser, argv, environ, act)


class Target:
    """A set or a queue, as ``jobs`` addresses it."""

    def __init__(self, set_name: str, queue: str) -> None:
        self.set, self.queue = set_name, queue

    @classmethod
    def parse(cls, where: str) -> Target:
        if where.startswith("queue:"):
            return cls("", where.removeprefix("queue:"))
        if where in SETS:
            return cls("morgue" if where == "dead" else where, "")
        return cls("", where)

    @property
    def path(self) -> str:
        return f"/api/sets/{self.set}" if self.set else f"/api/queues/{_quote(self.queue)}/jobs"

    def jobs(self, api: Api, search: str, tag: str, limit: int) -> Iterator[dict[str, Any]]:
        """Jobs in order, following the pages' cursors, up to ``limit``."""
        if (search or tag) and not self.set:
            raise AdminError("--search and --tag apply to retries, scheduled and dead")
        after, given = "", 0
        while given < limit:
            page = api.get(self.path, after=after, q=search, tag=tag)
            for job in page["jobs"]:
                yield job
                given += 1
                if given >= limit:
                    return
            after = page["next_after"]
            if not after:
                return

    def find(self, api: Api, job: str) -> dict[str, Any]:
        """A job by key or jid (a set's job with its timeline)."""
        key = job if job.isdigit() else ""
        if not key or not self.set:
            search = job if self.set else ""
            for entry in self.jobs(api, search, "", 100_000):
                if job in (entry["jid"], entry["key"]):
                    if not self.set:
                        return entry
                    key = entry["key"]
                    break
            else:
                raise AdminError(f"no job {job} in {self.set or self.queue}")
        found: dict[str, Any] = api.get(f"{self.path}/{key}")
        return found

    def edit(self, api: Api, args: argparse.Namespace) -> Any:
        if self.set:
            raise AdminError("only waiting jobs in a queue can be edited")
        entry = self.find(api, args.job)
        current = entry["job"]
        body = {
            "args": _json_option("args", args.args, current.get("args", [])),
            "custom": _json_option("custom", args.custom, current.get("custom")),
            "queue": args.to_queue or current.get("queue", ""),
            "at": current.get("at", "") if args.at is None else args.at,
            "priority": args.priority if args.priority is not None else current.get("priority"),
        }
        changed = {k: v for k, v in body.items() if v is not None}
        return api.post(f"{self.path}/{entry['key']}", changed)

    def act(self, api: Api, verb: str, jobs: list[str], every: bool, as_json: bool) -> Any:
        if not jobs and not every:
            raise AdminError(f"which jobs? name jids or keys, or pass --all to {verb} all")
        if self.queue:
            if verb != "delete":
                raise AdminError(f"{verb} applies to retries, scheduled and dead, not a queue")
            if every:
                raise AdminError("to delete every job of a queue: minifaktory queue clear NAME")
            keys = [int(self.find(api, j)["key"]) for j in jobs]
            done = api.post(f"{self.path}/delete", {"keys": keys})
        else:
            body: dict[str, Any] = {"action": verb}
            if every:
                body["all"] = True
            else:
                body["keys"] = [self.find(api, j)["key"] for j in jobs]
            done = api.post(f"/api/sets/{self.set}/actions", body)
        return done if as_json else f"{verb}: {done['count']} job(s)"


def _json_option(name: str, given: str | None, current: Any) -> Any:
    if given is None:
        return current
    try:
        return json.loads(given)
    except ValueError as exc:
        raise AdminError(f"--{name} is not valid JSON: {exc}") from None


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")

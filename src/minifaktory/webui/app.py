"""The Web UI's routes: server-rendered pages and a JSON API over the same data.

Handlers run on the server's own event loop, so actions call the broker
directly (one transaction each, as a wire command would); figures come from
the broker's in-memory counters and job lists from a read-only connection.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from minifaktory.clock import format_ns
from minifaktory.commands import current_state, store_health
from minifaktory.config import FAKTORY_VERSION, Config
from minifaktory.errors import CommandError
from minifaktory.payloads import Job, encode_in_order
from minifaktory.store import SetName
from minifaktory.webui import openapi, prometheus, views
from minifaktory.webui.security import Guard
from minifaktory.webui.views import Web

HERE = Path(__file__).parent


class JSONResponse(_StarletteJSON):
    """JSON through msgspec, which also writes INFO's Go-formatted numbers (``Raw``)."""

    def render(self, content: Any) -> bytes:
        return encode_in_order(content)


HISTORY_RANGES = {7: "1 week", 30: "1 month", 90: "3 months", 180: "6 months"}
QUEUE_ACTIONS = ("pause", "resume", "delete")


class SetNameConvertor(Convertor[str]):
    """The names of the three sets in URLs: /retries, /scheduled, /morgue (or /dead)."""

    regex = "retries|scheduled|morgue|dead"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("setname", SetNameConvertor())


def create_app(web: Web) -> Guard:
    """The ASGI application, wrapped in auth and cross-site protection."""
    config = web.config
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(version=FAKTORY_VERSION, environment=config.environment,
                                 binding=config.binding)  # fmt: skip
    templates.env.filters["thousands"] = lambda n: f"{n:,}"
    # "2026-07-01T10:00:00.123Z" → "2026-07-01 10:00:00" (UTC, as the footer says).
    templates.env.filters["when"] = lambda ts: str(ts)[:19].replace("T", " ")

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        state = current_state(web.services)
        return templates.TemplateResponse(
            request, name, {"state": state, "faktory": state["faktory"], **context},
            status_code=status_code,
        )  # fmt: skip

    async def health(request: Request) -> Response:
        state = current_state(web.services)
        server = state["server"]
        return JSONResponse({
            "now": state["now"],
            "server": {k: server[k] for k in ("description", "faktory_version", "connections",
                                              "command_count")},
        })  # fmt: skip

    async def ready(request: Request) -> Response:
        """Ready when the store takes writes: an idle server writes its probe row first."""
        await web.broker.probe(web.services.clock.now_ns())
        health = store_health(web.broker)
        return JSONResponse(
            {"ready": health["writable"], "store": health},
            status_code=200 if health["writable"] else 503,
        )

    async def stats(request: Request) -> Response:
        return JSONResponse(current_state(web.services), headers={"Cache-Control": "no-cache"})

    async def dashboard(request: Request) -> Response:
        days = _days(request)
        return page(request, "dashboard.html", history=views.history(web, days), days=days,
                    ranges=HISTORY_RANGES)  # fmt: skip

    async def history_api(request: Request) -> Response:
        return JSONResponse(views.history(web, _days(request)))

    async def queues(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            await _queue_action(web, str(form.get("queue", "")), str(form.get("action", "")))
            return RedirectResponse(request.url_for("queues"), status_code=302)
        return page(request, "queues.html", queues=views.queue_rows(web))

    async def queue_page(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in web.broker.queues:
            return RedirectResponse(request.url_for("queues"), status_code=302)
        if request.method == "POST":
            form = await request.form()
            keys = [str(k) for k in form.getlist("key")]
            if not keys:
                raise HTTPException(400, "Choose one or more jobs")
            await web.broker.delete_queued(name, [_row_id(k) for k in keys])
            return RedirectResponse(request.url_for("queue_page", name=name), status_code=302)
        rows, after = _queue_jobs(web, name, request)
        return page(request, "queue.html", queue=name, rows=rows, next_after=after,
                    paused=web.broker.queues[name].paused)  # fmt: skip

    async def queue_jobs_api(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in web.broker.queues:
            raise HTTPException(404, f"No such queue {name!r}")
        rows, after = _queue_jobs(web, name, request)
        return JSONResponse({"jobs": rows, "next_after": after})

    async def queue_delete_api(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = await request.json()
            keys = [_row_id(k) for k in body["keys"]]
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, 'Expected {"keys": [row ids]}') from None
        return JSONResponse({"count": await web.broker.delete_queued(name, keys)})

    async def edit_job(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        current = _queued_entry(web, name, key)
        if request.method == "GET":
            return page(request, "edit.html", queue=name, job=current, form=_edit_form(current),
                        error="")  # fmt: skip
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            changes = _changes_from_form(form)
            await web.broker.edit_queued(name, _row_id(key), changes)
        except CommandError as exc:
            return page(request, "edit.html", queue=name, job=current, form=form,
                        error=exc.message, status_code=400)  # fmt: skip
        return RedirectResponse(request.url_for("queue_page", name=name), status_code=302)

    async def edit_job_api(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        _queued_entry(web, name, key)
        body = await _json_object(request)
        try:
            changes = _changes(body)
            new = await web.broker.edit_queued(name, _row_id(key), changes)
        except CommandError as exc:
            raise HTTPException(400, exc.message) from None
        return JSONResponse(msgspec.json.decode(new))

    async def queues_api(request: Request) -> Response:
        return JSONResponse(views.queue_rows(web))

    async def queue_action_api(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        await _queue_action(web, name, action)
        return JSONResponse({"queue": name, "action": action, "ok": True})

    async def locks_api(request: Request) -> Response:
        name = request.path_params["name"]
        rows = web.reader.locks(name, 1000)
        return JSONResponse([
            {"key": key, "jid": jid, "expires_at": format_ns(expires)} for key, jid, expires in rows
        ])  # fmt: skip

    async def set_list(request: Request) -> Response:
        name = request.path_params["set"]
        kind = _set_kind(name)
        if request.method == "POST":
            form = await request.form()
            keys = [str(k) for k in form.getlist("key")]
            await _set_action(web, kind, keys, str(form.get("action", "")))
            return RedirectResponse(request.url_for("set_list", set=name), status_code=302)
        rows, after = await _set_rows(web, kind, request)
        return page(request, "sets.html", set=name, title=SET_TITLES[name], rows=rows,
                    next_after=after, q=request.query_params.get("q", ""),
                    tag=request.query_params.get("tag", ""))  # fmt: skip

    async def set_job(request: Request) -> Response:
        name = request.path_params["set"]
        row = _set_entry(web, _set_kind(name), request.path_params["key"])
        return page(request, "job.html", set=name, title=SET_TITLES[name], job=row)

    async def set_list_api(request: Request) -> Response:
        rows, after = await _set_rows(web, _set_kind(request.path_params["set"]), request)
        return JSONResponse({"jobs": rows, "next_after": after})

    async def set_job_api(request: Request) -> Response:
        kind = _set_kind(request.path_params["set"])
        return JSONResponse(_set_entry(web, kind, request.path_params["key"]))

    async def set_action_api(request: Request) -> Response:
        kind = _set_kind(request.path_params["set"])
        body = await _json_object(request)
        keys = ["all"] if body.get("all") is True else [str(k) for k in body.get("keys", [])]
        moved = await _set_action(web, kind, keys, str(body.get("action", "")))
        return JSONResponse({"action": body.get("action"), "count": moved})

    async def busy(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            _signal(web, str(form.get("wid", "")), str(form.get("signal", "")))
            return RedirectResponse(request.url_for("busy"), status_code=302)
        return page(request, "busy.html", workers=views.workers(web), jobs=views.in_flight(web))

    async def workers_api(request: Request) -> Response:
        return JSONResponse({"workers": views.workers(web), "jobs": views.in_flight(web)})

    async def signal_api(request: Request) -> Response:
        _signal(web, request.path_params["wid"], request.path_params["signal"])
        return JSONResponse({"ok": True})

    async def cron(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            await _run_cron(web, str(form.get("key", "")))
            return RedirectResponse(request.url_for("cron"), status_code=302)
        return page(request, "cron.html", entries=views.cron(web))

    async def cron_api(request: Request) -> Response:
        return JSONResponse(views.cron(web))

    async def cron_run_api(request: Request) -> Response:
        return JSONResponse({"jid": await _run_cron(web, request.path_params["key"])})

    async def batches(request: Request) -> Response:
        rows, after = _batch_rows(web, request)
        return page(request, "batches.html", batches=rows, next_after=after)

    async def batches_api(request: Request) -> Response:
        rows, after = _batch_rows(web, request)
        return JSONResponse({"batches": rows, "next_after": after})

    async def batch_page(request: Request) -> Response:
        return page(request, "batch.html", batch=_batch(web, request.path_params["bid"]))

    async def batch_api(request: Request) -> Response:
        return JSONResponse(_batch(web, request.path_params["bid"]))

    async def locks(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            keys = [str(k) for k in form.getlist("key")]
            await _release(web, str(form.get("queue", "")), None if keys == ["all"] else keys)
            return RedirectResponse(request.url_for("locks"), status_code=302)
        return page(request, "locks.html", queues=views.locks(web))

    async def locks_all_api(request: Request) -> Response:
        return JSONResponse(views.locks(web))

    async def release_api(request: Request) -> Response:
        body = await _json_object(request)
        keys = None if body.get("all") is True else body.get("keys")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise HTTPException(400, 'Expected {"keys": [lock keys]} or {"all": true}')
        return JSONResponse({"count": await _release(web, request.path_params["name"], keys)})

    async def throttles(request: Request) -> Response:
        return page(request, "throttles.html", throttles=views.throttles(web))

    async def throttles_api(request: Request) -> Response:
        return JSONResponse(views.throttles(web))

    async def debug(request: Request) -> Response:
        return page(request, "debug.html", debug=views.debug(web))

    async def debug_api(request: Request) -> Response:
        return JSONResponse(views.debug(web))

    scrape = prometheus.registry(web.services)

    async def metrics(request: Request) -> Response:
        """Prometheus text exposition, from in-memory figures (see webui/prometheus.py)."""
        return Response(prometheus.render(scrape), media_type=prometheus.CONTENT_TYPE)

    spec = openapi.description()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    routes = [
        Route("/", dashboard, name="dashboard"),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/healthz", health, methods=["GET", "HEAD"]),
        Route("/readyz", ready, methods=["GET", "HEAD"]),
        Route("/stats", stats),
        Route("/metrics", metrics),
        Route("/queues", queues, methods=["GET", "POST"], name="queues"),
        Route("/queues/{name}", queue_page, methods=["GET", "POST"], name="queue_page"),
        Route("/queues/{name}/{key}/edit", edit_job, methods=["GET", "POST"], name="edit_job"),
        Route("/busy", busy, methods=["GET", "POST"], name="busy"),
        Route("/cron", cron, methods=["GET", "POST"], name="cron"),
        Route("/batches", batches, name="batches"),
        Route("/batches/{bid}", batch_page, name="batch_page"),
        Route("/locks", locks, methods=["GET", "POST"], name="locks"),
        Route("/throttles", throttles, name="throttles"),
        Route("/debug", debug, name="debug"),
        Route("/api/cron", cron_api),
        Route("/api/cron/{key}/run", cron_run_api, methods=["POST"]),
        Route("/api/batches", batches_api),
        Route("/api/batches/{bid}", batch_api),
        Route("/api/locks", locks_all_api),
        Route("/api/throttles", throttles_api),
        Route("/api/debug", debug_api),
        Route("/api/workers", workers_api),
        Route("/api/workers/{wid}/{signal}", signal_api, methods=["POST"]),
        Route("/api/info", stats),
        Route("/api/openapi.json", openapi_json),
        Route("/api/history", history_api),
        Route("/api/queues", queues_api),
        Route("/api/queues/{name}/locks", locks_api),
        Route("/api/queues/{name}/locks/release", release_api, methods=["POST"]),
        Route("/api/queues/{name}/jobs", queue_jobs_api),
        Route("/api/queues/{name}/jobs/delete", queue_delete_api, methods=["POST"]),
        Route("/api/queues/{name}/jobs/{key}", edit_job_api, methods=["POST"]),
        Route("/api/queues/{name}/{action}", queue_action_api, methods=["POST"]),
        Route("/api/sets/{set}", set_list_api),
        Route("/api/sets/{set}/actions", set_action_api, methods=["POST"]),
        Route("/api/sets/{set}/{key}", set_job_api),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route("/{set:setname}", set_list, methods=["GET", "POST"], name="set_list"),
        Route("/{set:setname}/{key}", set_job, name="set_job"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _error})
    return Guard(app, web_password(config))


def web_password(config: Config) -> str:
    """Faktory's rule: ``[web] password`` if set, else the server's password."""
    table = config.toml.get("web", {})
    given = table.get("password") if isinstance(table, dict) else None
    return given if isinstance(given, str) and given else config.password


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return Response(f"{exc.status_code} {exc.detail}\n", status_code=exc.status_code,
                    media_type="text/plain")  # fmt: skip


def _days(request: Request) -> int:
    """The history range: 7, 30 (default), 90 or 180 days, as Faktory's dashboard offers."""
    raw = request.query_params.get("days", "30")
    try:
        days = int(raw)
    except ValueError:
        return 30
    return min(max(days, 1), 180)


SETS = {"retries": SetName.RETRIES, "scheduled": SetName.SCHEDULED, "morgue": SetName.DEAD,
        "dead": SetName.DEAD}  # fmt: skip
SET_TITLES = {"retries": "Retries", "scheduled": "Scheduled", "morgue": "Dead", "dead": "Dead"}
SET_ACTIONS = ("retry", "add_to_queue", "delete", "kill")
PAGE_SIZE = 25


def _queue_jobs(web: Web, queue: str, request: Request) -> tuple[list[dict[str, Any]], str]:
    """One page of a queue in fetch order (keyset paging with ``after=<row id>``)."""
    raw = request.query_params.get("after", "")
    after = _row_id(raw, "Invalid parameter: after") if raw else None
    rows = web.reader.queue_page(queue, after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    out = []
    for row in rows:
        described = views.describe(row)
        described.pop("at")
        described["priority"] = row.score
        out.append(described)
    return out, (str(rows[-1].key) if more else "")


EDITABLE = ("args", "custom", "queue", "at", "priority")


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "Expected a JSON body") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "Expected a JSON object")
    return body


def _row_id(value: object, problem: str = "Invalid job key", status: int = 400) -> int:
    """A job key from a URL, form or JSON: a row id, which SQLite holds in 64 bits."""
    text = str(value)
    if not text.isdigit() or int(text) >= 2**63:
        raise HTTPException(status, f"{problem}: {text[:40]!r}")
    return int(text)


def _queued_entry(web: Web, queue: str, key: str) -> dict[str, Any]:
    found = web.reader.queued_job(_row_id(key, status=404)) if key.isdigit() else None
    if found is None or found[0] != queue:
        raise HTTPException(404, f"No job {key!r} in queue {queue!r} (it may have been fetched)")
    return views.describe(found[1])


def _edit_form(entry: dict[str, Any]) -> dict[str, str]:
    job = entry["job"]
    return {
        "args": json.dumps(job.get("args", [])),
        "custom": json.dumps(job["custom"]) if job.get("custom") else "",
        "queue": job.get("queue", ""),
        "at": job.get("at", ""),
        "priority": str(job.get("priority", "")),
    }


def _changes_from_form(form: dict[str, str]) -> Job:
    def parsed(field: str) -> Any:
        text = form.get(field, "").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CommandError(f"{field} is not valid JSON: {exc}") from None

    priority = form.get("priority", "").strip()
    if priority and not priority.isdigit():
        raise CommandError("priority must be a whole number from 1 to 9")
    return _changes({"args": parsed("args"), "custom": parsed("custom"),
                     "queue": form.get("queue", ""), "at": form.get("at", ""),
                     "priority": int(priority) if priority else 0})  # fmt: skip


def _changes(body: dict[str, Any]) -> Job:
    """The editable fields, typed and checked like a PUSH payload."""
    unknown = set(body) - set(EDITABLE)
    if unknown:
        raise CommandError(
            f"only {', '.join(EDITABLE)} can be edited, not {', '.join(sorted(unknown))}"
        )
    try:
        return msgspec.convert({k: v for k, v in body.items() if v is not None}, Job)
    except msgspec.ValidationError as exc:
        raise CommandError(f"invalid edit: {exc}") from None


def _set_kind(name: str) -> SetName:
    kind = SETS.get(name)
    if kind is None:
        raise HTTPException(404, f"No such page {name!r}")
    return kind


async def _set_rows(web: Web, kind: SetName, request: Request) -> tuple[list[dict[str, Any]], str]:
    """One page of a set (keyset paging with ``after=<score>.<id>``) and the next cursor;
    a search or tag filter runs on the search thread."""
    raw = request.query_params.get("after", "")
    after: tuple[int, int] | None = None
    if raw:
        try:
            score, _, key = raw.partition(".")
            after = (int(score), _row_id(key))
            if not -(2**63) <= after[0] < 2**63:  # a score is a 64-bit integer in SQLite
                raise ValueError(score)
        except (ValueError, HTTPException):
            raise HTTPException(400, "Invalid parameter: after") from None
    text, tag = request.query_params.get("q", ""), request.query_params.get("tag", "")
    if text or tag:
        search = functools.partial(web.reader.search, kind, after, PAGE_SIZE + 1, text, tag)
        rows = await asyncio.get_running_loop().run_in_executor(web.scanner, search)
    else:
        rows = web.reader.set_page(kind, after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    cursor = f"{rows[-1].score}.{rows[-1].key}" if more else ""
    return [views.describe(r) for r in rows], cursor


def _set_entry(web: Web, kind: SetName, key: str) -> dict[str, Any]:
    if not key.isdigit():
        raise HTTPException(404, f"No such job {key!r}")
    row = web.reader.set_entry(kind, _row_id(key, status=404))
    if row is None:
        raise HTTPException(404, f"No such job {key!r} (it may have moved on)")
    described = views.describe(row)
    described["timeline"] = views.timeline(
        described["job"], web.reader.events(row.jid), retrying=kind is SetName.RETRIES
    )
    return described


async def _set_action(web: Web, kind: SetName, keys: list[str], action: str) -> int:
    if action not in SET_ACTIONS:
        raise HTTPException(400, f"Invalid action {action!r}: use {', '.join(SET_ACTIONS)}")
    if keys == ["all"]:
        count: int = await web.broker.act_on_set(kind, None, action)
        return count
    if not keys:
        raise HTTPException(400, "Choose one or more jobs")
    count = await web.broker.act_on_set(kind, [_row_id(k) for k in keys], action)
    return count


def _signal(web: Web, wid: str, signal: str) -> None:
    """Quiet or terminate one worker (``wid``) or all (``all``); delivered by its next BEAT."""
    if signal not in ("quiet", "terminate"):
        raise HTTPException(400, f"Invalid signal: {signal}")
    registry = web.services.registry
    if wid != "all" and wid not in registry.workers:
        raise HTTPException(404, f"No such worker {wid!r}")
    registry.signal(None if wid == "all" else wid, signal)


async def _queue_action(web: Web, name: str, action: str) -> None:
    if action not in QUEUE_ACTIONS:
        raise HTTPException(400, f"Invalid action {action!r}: use pause, resume or delete")
    if name not in web.broker.queues:
        raise HTTPException(404, f"No such queue {name!r}")
    if action == "delete":
        await web.broker.remove([name])
    else:
        await web.broker.pause([name], paused=action == "pause")


async def _run_cron(web: Web, key: str) -> str:
    """Push one firing of the cron entry ``key`` now; the new job's jid."""
    for entry in web.services.cron:
        if entry.key == key:
            jid: str = await web.broker.run_cron_now(entry)
            return jid
    raise HTTPException(404, f"No cron entry {key!r} (conf.d may have been reloaded)")


async def _release(web: Web, queue: str, keys: list[str] | None) -> int:
    """Release uniqueness locks of ``queue`` by key (``None``: all of them)."""
    if queue not in web.broker.queues:
        raise HTTPException(404, f"No such queue {queue!r}")
    if keys is not None and not keys:
        raise HTTPException(400, "Choose one or more locks")
    released: int = await web.broker.release_locks(queue, keys)
    return released


def _batch_rows(web: Web, request: Request) -> tuple[list[dict[str, Any]], str]:
    """One page of batches, newest first (keyset paging with ``after=<created>.<bid>``)."""
    raw = request.query_params.get("after", "")
    after: tuple[int, str] | None = None
    if raw:
        created, _, bid = raw.partition(".")
        if not created.isdigit() or int(created) >= 2**63 or not bid:
            raise HTTPException(400, "Invalid parameter: after")
        after = (int(created), bid)
    rows = web.reader.batches(after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    cursor = f"{rows[-1].created_at}.{rows[-1].bid}" if more else ""
    return [views.batch_summary(r) for r in rows], cursor


def _batch(web: Web, bid: str) -> dict[str, Any]:
    found = views.batch_detail(web, bid)
    if found is None:
        raise HTTPException(404, f"No such batch {bid!r} (finished batches are kept 7 days)")
    return found

"""The Web UI's routes: server-rendered pages and a JSON API over the same data.

Handlers run on the server's own event loop, so actions call the broker
directly (one transaction each, as a wire command would); figures come from
the broker's in-memory counters and job lists from a read-only connection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from minifaktory.clock import NS, format_ns
from minifaktory.commands import Services, current_state
from minifaktory.config import FAKTORY_VERSION, Config
from minifaktory.store.reader import Reader
from minifaktory.webui.security import Guard

HERE = Path(__file__).parent
HISTORY_RANGES = {7: "1 week", 30: "1 month", 90: "3 months", 180: "6 months"}
QUEUE_ACTIONS = ("pause", "resume", "delete")


@dataclass(eq=False)
class Web:
    """What the pages read from."""

    services: Services
    reader: Reader
    config: Config

    @property
    def broker(self) -> Any:
        return self.services.broker


def create_app(services: Services, reader: Reader, config: Config) -> Guard:
    """The ASGI application, wrapped in auth and cross-site protection."""
    web = Web(services, reader, config)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(version=FAKTORY_VERSION, environment=config.environment,
                                 binding=config.binding)  # fmt: skip
    templates.env.filters["thousands"] = lambda n: f"{n:,}"

    def page(request: Request, name: str, **context: Any) -> Response:
        state = current_state(web.services)
        return templates.TemplateResponse(
            request, name, {"state": state, "faktory": state["faktory"], **context}
        )

    async def health(request: Request) -> Response:
        state = current_state(web.services)
        server = state["server"]
        return JSONResponse({
            "now": state["now"],
            "server": {k: server[k] for k in ("description", "faktory_version", "connections",
                                              "command_count")},
        })  # fmt: skip

    async def stats(request: Request) -> Response:
        return JSONResponse(current_state(web.services), headers={"Cache-Control": "no-cache"})

    async def dashboard(request: Request) -> Response:
        days = _days(request)
        return page(request, "dashboard.html", history=_history(web, days), days=days,
                    ranges=HISTORY_RANGES)  # fmt: skip

    async def history_api(request: Request) -> Response:
        return JSONResponse(_history(web, _days(request)))

    async def queues(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            await _queue_action(web, str(form.get("queue", "")), str(form.get("action", "")))
            return RedirectResponse(request.url_for("queues"), status_code=302)
        return page(request, "queues.html", queues=_queue_rows(web))

    async def queues_api(request: Request) -> Response:
        return JSONResponse(_queue_rows(web))

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

    routes = [
        Route("/", dashboard, name="dashboard"),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/stats", stats),
        Route("/queues", queues, methods=["GET", "POST"], name="queues"),
        Route("/api/info", stats),
        Route("/api/history", history_api),
        Route("/api/queues", queues_api),
        Route("/api/queues/{name}/locks", locks_api),
        Route("/api/queues/{name}/{action}", queue_action_api, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
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


def _history(web: Web, days: int) -> list[dict[str, Any]]:
    now = web.services.clock.now_ns()
    today = dt.datetime.fromtimestamp(now // NS, dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    known = web.reader.history(first.isoformat())
    out = []
    for offset in range(days):
        day = (first + dt.timedelta(days=offset)).isoformat()
        processed, failed = known.get(day, (0, 0))
        out.append({"date": day, "processed": processed, "failed": failed})
    return out


def _queue_rows(web: Web) -> list[dict[str, Any]]:
    broker = web.broker
    names = sorted(broker.queues)
    latency = broker.latency(names)
    return [
        {
            "name": name,
            "size": broker.queues[name].size,
            "paused": broker.queues[name].paused,
            "latency": round(latency[name], 3),
            "unique_locks": broker.locks.get(name, 0),
        }
        for name in names
    ]


async def _queue_action(web: Web, name: str, action: str) -> None:
    if action not in QUEUE_ACTIONS:
        raise HTTPException(400, f"Invalid action {action!r}: use pause, resume or delete")
    if name not in web.broker.queues:
        raise HTTPException(404, f"No such queue {name!r}")
    if action == "delete":
        await web.broker.remove([name])
    else:
        await web.broker.pause([name], paused=action == "pause")

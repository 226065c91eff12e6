"""The OpenAPI description of the JSON API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from minifaktory.config import FAKTORY_VERSION

ERROR = {"$ref": "#/components/schemas/Error"}
OBJECT: dict[str, Any] = {"type": "object"}
KEY = {"type": "string", "pattern": "^[0-9]{1,18}$"}
#: ``<score>.<row id>``: a score fits SQLite's 64-bit integers (19 digits only below 9e18).
SET_CURSOR = "^-?([0-9]{1,18}|[1-8][0-9]{18})[.][0-9]{1,18}$"
ROW_ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
PAGE = {
    "type": "object",
    "required": ["jobs", "next_after"],
    "properties": {"jobs": {"type": "array", "items": OBJECT}, "next_after": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input",
        401: "Authorization required or failed",
        403: "Cross-site request refused",
        404: "Not found",
    }
    out: dict[str, Any] = {}
    for code in codes:
        if code in (401, 403):
            out[str(code)] = {
                "description": text[code],
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        else:
            out[str(code)] = _json(ERROR, text[code])
    return out


def _param(name: str, schema: dict[str, Any], where: str = "path") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _get(
    summary: str, response: dict[str, Any], *params: dict[str, Any], errors: tuple[int, ...] = ()
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(params),
            "responses": {"200": _json(response), **_errors(401, *errors)},
        }
    }


def _post(
    summary: str,
    response: dict[str, Any],
    *params: dict[str, Any],
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {"200": _json(response), **_errors(401, 403, *errors)},
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return {"post": operation}


def description() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    queue = _param("name", {"type": "string"})
    set_name = _param("set", {"type": "string", "enum": ["retries", "scheduled", "morgue", "dead"]})
    info = {"type": "object", "required": ["now", "server_utc_time", "faktory", "server"]}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "minifaktory JSON API",
            "version": FAKTORY_VERSION,
            "description": "Every page of the Web UI, as JSON. POSTs must come from the "
            "same site (Sec-Fetch-Site) and, with a password, carry HTTP Basic auth.",
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness for probes (never asks for a password)",
                    "responses": {"200": _json({"type": "object", "required": ["now", "server"]})},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness, as /health (never asks for a password)",
                    "responses": {"200": _json({"type": "object", "required": ["now", "server"]})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: 200 when the database takes writes, else 503",
                    "responses": {
                        "200": _json({"type": "object", "required": ["ready", "store"]}),
                        "503": _json(
                            {"type": "object", "required": ["ready", "store"]}, "Not ready"
                        ),
                    },
                }
            },
            "/stats": _get("INFO, as the dashboard polls it", info),
            "/api/info": _get("INFO", info),
            "/api/history": _get(
                "Processed and failed per day",
                {
                    "type": "array",
                    "items": {"type": "object", "required": ["date", "processed", "failed"]},
                },
                _param("days", {"type": "integer"}, "query"),
            ),
            "/api/queues": _get(
                "Queues with size, latency, paused, locks", {"type": "array", "items": OBJECT}
            ),
            "/api/queues/{name}/locks": _get(
                "Uniqueness locks of a queue", {"type": "array", "items": OBJECT}, queue
            ),
            "/api/queues/{name}/jobs": _get(
                "A queue's jobs in fetch order",
                PAGE,
                queue,
                _param("after", KEY, "query"),
                errors=(400, 404),
            ),
            "/api/queues/{name}/jobs/delete": _post(
                "Delete chosen jobs of a queue",
                {"type": "object", "required": ["count"]},
                queue,
                body={
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": ROW_ID}},
                },
                errors=(400,),
            ),
            "/api/queues/{name}/jobs/{key}": _post(
                "Edit a waiting job in place, by the PUSH rules",
                OBJECT,
                queue,
                _param("key", KEY),
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "args": {"type": "array"},
                        "custom": {"type": "object"},
                        "queue": {"type": "string"},
                        "at": {"type": "string", "format": "date-time"},
                        "priority": {"type": "integer"},
                    },
                },
                errors=(400, 404),
            ),
            "/api/queues/{name}/{action}": _post(
                "Pause, resume or delete a queue",
                OBJECT,
                queue,
                _param("action", {"type": "string", "enum": ["pause", "resume", "delete"]}),
                errors=(400, 404),
            ),
            "/api/workers": _get(
                "Worker processes and in-flight jobs",
                {"type": "object", "required": ["workers", "jobs"]},
            ),
            "/api/workers/{wid}/{signal}": _post(
                "Quiet or terminate a worker (wid 'all' for every one)",
                OBJECT,
                _param("wid", {"type": "string"}),
                _param("signal", {"type": "string", "enum": ["quiet", "terminate"]}),
                errors=(400, 404),
            ),
            "/api/sets/{set}": _get(
                "A page of retries, scheduled or dead jobs",
                PAGE,
                set_name,
                _param("after", {"type": "string", "pattern": SET_CURSOR}, "query"),
                _param("q", {"type": "string"}, "query"),
                _param("tag", {"type": "string"}, "query"),
                errors=(400, 404),
            ),
            "/api/sets/{set}/actions": _post(
                "Retry, add to queue, delete or kill chosen jobs (or all)",
                {"type": "object", "required": ["count"]},
                set_name,
                body={
                    "type": "object",
                    "required": ["action", "keys"],
                    "properties": {
                        "action": {
                            "type": "string",
                            "enum": ["retry", "add_to_queue", "delete", "kill"],
                        },
                        "keys": {"type": "array", "items": KEY, "minItems": 1},
                        "all": {"type": "boolean"},
                    },
                },
                errors=(400, 404),
            ),
            "/api/sets/{set}/{key}": _get(
                "One job of a set, with its timeline",
                {"type": "object", "required": ["jid", "job", "timeline"]},
                set_name,
                _param("key", KEY),
                errors=(404,),
            ),
            "/api/cron": _get(
                "Cron entries with their last and next run", {"type": "array", "items": OBJECT}
            ),
            "/api/cron/{key}/run": _post(
                "Push one run of a cron entry now (its schedule is unchanged)",
                {"type": "object", "required": ["jid"]},
                _param("key", {"type": "string"}),
                errors=(404,),
            ),
            "/api/batches": _get(
                "Batches, newest first",
                {
                    "type": "object",
                    "required": ["batches", "next_after"],
                    "properties": {
                        "batches": {"type": "array", "items": OBJECT},
                        "next_after": {"type": "string"},
                    },
                },
                _param("after", {"type": "string", "pattern": "^[0-9]{1,18}[.].+$"}, "query"),
                errors=(400,),
            ),
            "/api/batches/{bid}": _get(
                "A batch: status, callbacks, child batches, failed members",
                {"type": "object", "required": ["bid", "state", "children", "failed_jids"]},
                _param("bid", {"type": "string"}),
                errors=(404,),
            ),
            "/api/locks": _get(
                "Uniqueness locks per queue (count and the soonest to expire)",
                {"type": "array", "items": OBJECT},
            ),
            "/api/queues/{name}/locks/release": _post(
                "Release uniqueness locks of a queue by key, or all of them",
                {"type": "object", "required": ["count"]},
                queue,
                body={
                    "type": "object",
                    "properties": {
                        "keys": {"type": "array", "items": {"type": "string"}},
                        "all": {"type": "boolean"},
                    },
                },
                errors=(400, 404),
            ),
            "/api/throttles": _get("Throttled queues: limit and slots in use", OBJECT),
            "/api/debug": _get("Storage and runtime figures, masked configuration", OBJECT),
        },
    }

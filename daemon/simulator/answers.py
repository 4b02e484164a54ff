"""How the simulator answers, as VMS (Django REST framework) does: JSON bodies, DRF-style errors,
query and body parsing, and the paging envelope. Shared by the routes, the admin routes and the
middlewares."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

JSON = "application/json"


class ApiError(Exception):
    """An error answer: status and a DRF-style JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def bad(field: str, reason: str) -> ApiError:
    """400 naming the field, as DRF's validation errors do."""
    return ApiError(400, {field: [reason]})


def not_found() -> ApiError:
    return ApiError(404, {"detail": "Not found."})


def not_allowed(method: str) -> ApiError:
    return ApiError(405, {"detail": f'Method "{method}" not allowed.'})


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def json_response(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(payload).encode(), status=status, content_type=JSON, headers=headers)


def raw_json_response(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode(), status=status, content_type=JSON)


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(field: str, text: str) -> float:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad(field, f"not an ISO time: {text!r} (e.g. 2021-01-15T13:41:52Z)") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def int_param(query: Mapping[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad(name, f"A valid integer is required, got {raw!r}.") from exc
    if value < minimum:
        raise bad(name, f"Ensure this value is greater than or equal to {minimum}.")
    return value


def body_int(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(name, f"A valid non-negative integer is required, got {value!r}.")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} without a body); 400 when it is not one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    if not isinstance(body, dict):
        raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
    return body


def list_response(request: web.Request, items: list[Any], render: Callable[[list[Any]], list[str]]) -> web.Response:
    """A plain JSON array, or the DRF paging envelope when `page_size` is given. `render` turns
    items into JSON texts."""
    query = request.query
    page_size = int_param(query, "page_size", None)
    if page_size is None:
        return raw_json_response("[" + ",".join(render(items)) + "]")
    page = int_param(query, "page", 1)
    assert page is not None
    count = len(items)
    last_page = max(1, -(-count // page_size))
    if page > last_page:
        raise ApiError(404, {"detail": "Invalid page."})
    chunk = items[(page - 1) * page_size: page * page_size]

    def link(number: int) -> str | None:
        if not 1 <= number <= last_page:
            return None
        params = [(k, v) for k, v in query.items() if k != "page"] + [("page", str(number))]
        return f"https://{request.host}{request.path}?{urlencode(params)}"

    head = dumps({"count": count, "next": link(page + 1), "previous": link(page - 1)})[:-1]
    return raw_json_response(f'{head},"results":[{",".join(render(chunk))}]}}')

"""Reading a JSON request body safely: a size limit while reading (413), a time limit (408), then a
nesting-depth limit checked on the raw bytes *before* parsing (Python's json recurses once per
level, so `[` × 30,000 would otherwise end in a RecursionError), then strict JSON (no `NaN`,
`Infinity`, duplicate keys or 5,000-digit numbers), then the pydantic model (400 naming the field).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from quotapilot.daemon.http.api.render import ApiError

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a body may have (ours need 2)."""
MAX_NUMBER_DIGITS = 40
"""Longest number literal accepted (2**62 has 19 digits; a float with exponent fits easily)."""
BODY_READ_TIMEOUT_SECONDS = 10.0

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def json_depth(raw: bytes, *, stop_above: int | None = None) -> int:
    """The deepest nesting of `[`/`{` in a JSON text, brackets inside strings not counted; stops
    counting once it exceeds `stop_above`. Linear, no recursion, does not validate the text."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif byte in _CLOSE:
            depth = max(0, depth - 1)
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(text: str) -> int | float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text)} characters is too long")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_json(raw: bytes) -> Any:
    """Strict JSON from bytes; `ApiError` 400 (`too_deep` or `bad_json`, field `body`) otherwise."""
    if json_depth(raw, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ApiError(400, "too_deep", f"the body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
                       field="body")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_int=_number,
                          parse_float=_number, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}", field="body") from None


async def read_body(request: web.Request, model: type[M], *, limit: int, optional: bool = False) -> M:
    """The request's JSON body as `model`; with `optional`, an empty body means `{}`."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise ApiError(408, "body_timeout", "the request body did not arrive in time") from None
    raw = b"".join(chunks)
    if len(raw) > limit:
        raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    payload = parse_json(raw) if raw.strip() else ({} if optional else None)
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object", field="body")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"]) or "body"
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown field"
        raise ApiError(400, "invalid", f"{field_name}: {reason}", field=field_name) from None

"""The request bodies of `/api/v1`, as pydantic models: the one definition of what is valid.

`openapi.json`'s request schemas are generated from these (`openapi_schema()`; write them with
`python -m quotapilot.daemon.http.api.openapi`, and a test fails when the document and the
models differ), so each pattern and limit is written once, here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from quotapilot.daemon.units import parse_bytes, parse_duration

MAX_BYTES = 2**62  # SQLite integers are 64-bit; nothing real is larger
MAX_TTL_SECONDS = 30 * 86400.0
MIN_TTL_SECONDS = 1.0
"""The shortest reservation: a shorter one (0.5, 1e-300) expires before the write it is for can start."""

# --------------------------------------------------------------------------------- request models
# The accepted spellings; the same patterns go into openapi.json (`request_schemas()`), so the
# document and the code agree on what is valid.
BYTE_STRING_PATTERN = (
    r"^([0-9]{1,18}(\.[0-9]{1,3})? ?B|[0-9]{1,15}(\.[0-9]{1,3})? ?Ki?B|[0-9]{1,12}(\.[0-9]{1,3})? ?Mi?B"
    r"|[0-9]{1,9}(\.[0-9]{1,3})? ?Gi?B|[0-9]{1,6}(\.[0-9]{1,3})? ?Ti?B|[0-9]{1,3}(\.[0-9]{1,3})? ?Pi?B)$")
DURATION_STRING_PATTERN = r"^[0-9]{1,6} ?(s|m|h|d)$"
_BYTE_STRING = re.compile(BYTE_STRING_PATTERN)
_DURATION_STRING = re.compile(DURATION_STRING_PATTERN)


def parse_byte_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer number of bytes or a string like '40TB'")
    if isinstance(value, str) and not _BYTE_STRING.match(value):
        raise ValueError("not a byte size: use an integer or e.g. '40TB', '1.5TiB'")
    return parse_bytes(value)


def parse_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be seconds or a string like '6h'")
    if isinstance(value, str) and not _DURATION_STRING.match(value):
        raise ValueError("not a duration: use seconds or e.g. '90s', '15m', '6h', '2d'")
    return parse_duration(value)


BYTES_DESCRIPTION = "Bytes: an integer, or a string like `40TB` / `1.5TiB`."
ByteCount = Annotated[
    int, BeforeValidator(parse_byte_count), Field(ge=0, le=MAX_BYTES),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_BYTES},
                              {"type": "string", "pattern": BYTE_STRING_PATTERN}]})]
Duration = Annotated[
    float, BeforeValidator(parse_seconds), Field(ge=0, le=MAX_TTL_SECONDS, allow_inf_nan=False),
    WithJsonSchema({"oneOf": [{"type": "number", "minimum": 0, "maximum": MAX_TTL_SECONDS},
                              {"type": "string", "pattern": DURATION_STRING_PATTERN}]})]
Ttl = Annotated[
    float, BeforeValidator(parse_seconds), Field(ge=MIN_TTL_SECONDS, le=MAX_TTL_SECONDS, allow_inf_nan=False),
    WithJsonSchema({"oneOf": [{"type": "number", "minimum": MIN_TTL_SECONDS, "maximum": MAX_TTL_SECONDS},
                              {"type": "string", "pattern": DURATION_STRING_PATTERN}]})]
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_BYTES)]
PAUSE_MAX_SECONDS = 400 * 86400
Until = Annotated[
    StrictStr | StrictFloat | StrictInt | None,
    WithJsonSchema({"oneOf": [
        {"type": "string", "description": "ISO 8601 time with timezone (in the future, at most 400 d ahead), or a "
                                          "duration like `12h` (1 s to 400 d)."},
        {"type": "number", "minimum": 1, "maximum": PAUSE_MAX_SECONDS}], "nullable": True})]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreflightRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096, description="Quota name or path.",
                              examples=["/cosmos7/processed"])
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount = Field(description=BYTES_DESCRIPTION)
    inodes: Count | None = None
    needed_for: Duration | None = Field(
        None, description="Seconds, or a string like `90s`, `15m`, `6h`, `2d` (at most 30 days). Default 1h: how "
        "long the data must fit.")


class ReservationRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096, examples=["cosmos7-processed"])
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount = Field(description=BYTES_DESCRIPTION)
    inodes: Count | None = None
    ttl: Ttl = Field(description="Seconds, or a string like `1h` (1 second to 30 days).")
    idempotency_key: StrictStr = Field(
        min_length=1, max_length=256,
        description="Retrying with the same key returns the stored answer (same status, same body).")


class PauseRequest(Body):
    until: Until = None
    reason: StrictStr = Field("", max_length=1000)


class KillSwitchRequest(Body):
    enabled: StrictBool
    reason: StrictStr = Field("", max_length=1000)


REQUEST_MODELS: dict[str, type[Body]] = {
    "PreflightRequest": PreflightRequest, "ReservationRequest": ReservationRequest,
    "PauseRequest": PauseRequest, "KillSwitchRequest": KillSwitchRequest,
}
"""The request bodies by their name under `components.schemas` in openapi.json."""


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema in OpenAPI 3.0's dialect, as openapi.json carries it: no titles or
    defaults, `X | None` as `nullable`, one `example` rather than `examples`."""
    schema: dict[str, Any] = _openapi(model.model_json_schema())
    return schema


def _openapi(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi(v) for v in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of and len(any_of) == 2:
        (other,) = [v for v in any_of if v != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _openapi({**other, **rest, "nullable": True})
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default"):
            continue
        if key == "examples" and isinstance(value, list) and value:
            out["example"] = value[0]
        elif key == "properties":
            out[key] = {name: _openapi(prop) for name, prop in value.items()}
        else:
            out[key] = _openapi(value)
    return out

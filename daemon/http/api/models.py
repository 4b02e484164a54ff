"""The request bodies of `/api/v1`, as pydantic models: the one definition of what is valid.

`openapi.json` takes its request schemas from here (`request_schemas()`; a test holds the
document to them field by field), so a pattern is written once.
"""

from __future__ import annotations

import re
from typing import Annotated

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
)

from quotapilot.daemon.units import parse_bytes, parse_duration

MAX_BYTES = 2**62  # SQLite integers are 64-bit; nothing real is larger
MAX_TTL_SECONDS = 30 * 86400.0

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


ByteCount = Annotated[int, BeforeValidator(parse_byte_count), Field(ge=0, le=MAX_BYTES)]
Duration = Annotated[float, BeforeValidator(parse_seconds), Field(ge=0, le=MAX_TTL_SECONDS, allow_inf_nan=False)]
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_BYTES)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreflightRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096, description="Quota name or path.")
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount
    inodes: Count | None = None
    needed_for: Duration | None = None


class ReservationRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096)
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount
    inodes: Count | None = None
    ttl: Annotated[float, BeforeValidator(parse_seconds), Field(gt=0, le=MAX_TTL_SECONDS, allow_inf_nan=False)]
    idempotency_key: StrictStr = Field(min_length=1, max_length=256)


class PauseRequest(Body):
    until: StrictStr | StrictFloat | StrictInt | None = Field(
        None, description="ISO 8601 time, a duration ('12h') or seconds.")
    reason: StrictStr = Field("", max_length=1000)


class KillSwitchRequest(Body):
    enabled: StrictBool
    reason: StrictStr = Field("", max_length=1000)

"""Helpers for the simulator tests: real vastpy clients, schema checks, scenario files.

vastpy is synchronous (urllib3, a new TLS connection per request): tests call it through
`asyncio.to_thread` so the server keeps running in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vastpy
from jsonschema import Draft202012Validator

from quotapilot.daemon.simulator import SimulatorServer

SCHEMAS = json.loads((Path(__file__).parents[1] / "schemas" / "vms_components.json").read_text())


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one blocking vastpy call in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def client_for(sim: SimulatorServer, **overrides: Any) -> vastpy.VASTClient:
    """A vastpy client that verifies the simulator's TLS with its CA (token auth by default)."""
    kwargs: dict[str, Any] = {"address": sim.address, "cert_file": str(sim.ca_file)}
    if "user" not in overrides:
        kwargs["token"] = sim.token
    kwargs.update(overrides)
    return vastpy.VASTClient(**kwargs)


def schema_errors(obj: object, name: str) -> list[str]:
    """Errors of `obj` against the trimmed VMS component schema `name`, plus any field the schema
    does not declare (a simulator must not invent fields)."""
    validator = Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": SCHEMAS["$defs"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    declared = SCHEMAS["$defs"][name]["properties"]
    if isinstance(obj, dict):
        errors += [f"{key}: not in the {name} schema" for key in obj if key not in declared]
    return errors


def write_scenario(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path

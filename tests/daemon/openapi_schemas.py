"""The answer schemas of `openapi.json` (OpenAPI 3.0) as JSON Schema, to validate real answers
with `jsonschema`: `nullable: true` becomes a `null` alternative; `$ref`s resolve in the document."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from quotapilot.daemon.http.api import OPENAPI_PATH


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def validator(schema_name: str) -> jsonschema.protocols.Validator:
    """A validator of `components.schemas[schema_name]` of the served document."""
    document = json.loads(OPENAPI_PATH.read_text())
    root = {"$ref": f"#/components/schemas/{schema_name}",
            "components": _json_schema(document["components"])}
    validator_class = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    return validator_class(root, format_checker=validator_class.FORMAT_CHECKER)

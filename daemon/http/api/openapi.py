"""openapi.json's request schemas, generated from the pydantic models in `models`.

    python -m quotapilot.daemon.http.api.openapi           # rewrite them in openapi.json
    python -m quotapilot.daemon.http.api.openapi --check   # exit 1 if the document differs

The rest of the document (paths, answers) is written by hand; the schema fuzz tests hold the
answers to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from quotapilot.daemon.http.api.models import REQUEST_MODELS, openapi_schema

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def with_request_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with every request body schema replaced by the one generated from its model."""
    schemas = dict(document["components"]["schemas"])
    for name, model in REQUEST_MODELS.items():
        schemas[name] = openapi_schema(model)
    return {**document, "components": {**document["components"], "schemas": schemas}}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    current = OPENAPI_PATH.read_text(encoding="utf-8")
    wanted = render(with_request_schemas(json.loads(current)))
    if "--check" in argv:
        if current != wanted:
            print(f"{OPENAPI_PATH}: request schemas differ from the models; run "
                  "python -m quotapilot.daemon.http.api.openapi", file=sys.stderr)
            return 1
        return 0
    OPENAPI_PATH.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The pipeline API: `/api/v1` on the daemon's aiohttp server.

Read endpoints (targets, actions, reservations, the OpenAPI document) are open on the listen
address; every write endpoint needs `Authorization: Bearer <[http] write_token>`. Bodies are
JSON, read with a size limit (413), a time limit (408) and a nesting-depth limit (400) before
parsing, then validated with pydantic (400 naming the field); an unknown target is 404; an
unknown route or method is a JSON 404/405; any unexpected error becomes a 500 JSON answer and a
log line, never a crashed daemon. `openapi.json` here describes every route and is what
`/api/v1/openapi.json` serves; its request schemas come from `models`.

Targets are addressed by quota name (`/api/v1/targets/cosmos7-raw`), by URL-encoded path
(`/api/v1/targets/%2Fcosmos7%2Fraw`), or by `?path=/cosmos7/raw` (the `{ref}` segment is then
ignored; `by-path` reads well). With several clusters, `?cluster=` (or a `cluster` body field)
picks one when a name is ambiguous.

Modules: `models` (request bodies), `body` (reading them safely), `render` (answer shapes and
the records they render), `handlers` (`Api`, the routes). The handlers read the daemon's latest
immutable snapshot through `ApiDaemon`, a small documented interface, and the store; the fit
arithmetic is `forecasting.preflight` (pure). Imports only `daemon.store`, `daemon.runtime.snapshot`,
`daemon.settings` and the pure packages; never the Daemon.
"""

from quotapilot.daemon.http.api.handlers import API_KEY, Api, ApiDaemon, add_api_routes
from quotapilot.daemon.http.api.openapi import OPENAPI_PATH

__all__ = ["API_KEY", "OPENAPI_PATH", "Api", "ApiDaemon", "add_api_routes"]

"""The HTTP surface: `server` (aiohttp listener for /metrics, /healthz, /api/v1), `metrics` (the
core Prometheus collectors and the /metrics exposition, from the immutable snapshot), `api` (the
pipeline API, behind its `ApiDaemon` contract) and `openapi.json`.

May import: `daemon.runtime` data types (`snapshot`, `cycle`), `daemon.store`, `daemon.vms`
constants, `forecasting`, and the top-level modules. Never `runtime.daemon` or `runtime.wiring`:
the server is handed its collaborators (a metrics renderer, a health function, the API's).
"""

"""quotapilot.daemon: everything with IO, in subpackages by concern — `runtime` (the Daemon, wiring,
cycle, poller, supervisor, health), `vms` (the only vastpy boundary), `stages` (forecast, growth,
actuator, alerting), `store` (SQLite), `http` (/metrics, /healthz, /api/v1), `commands` (CLI
verbs), `simulator` (the built-in VMS); top-level `settings`, `clock`, `errors`, `logs`, `units`,
`cli`, `pipeline_client` (the pipeline SDK).

May import `quotapilot.forecasting` and `quotapilot.alerts`; they never import it (enforced by
`tests/test_architecture.py`, with: no import cycle, only `vms` imports vastpy, stages and HTTP
never import the daemon or its wiring).
"""

__version__ = "0.1.0"

"""The cycle's stages, one per module behind the `runtime.cycle.Stage` protocol: `store` (samples
into the store), `forecast` (Holt-Winters per series), `growth` (the planner and its guards) with
`actuator` (the write path to VMS: write-ahead, re-read, PATCH, verify, reconcile), `alerting`
(rules, outbox, delivery task). Each publishes an immutable view its metrics read.

May import: `forecasting`, `alerts`, `daemon.store`, the cycle's data types in `daemon.runtime`
(`cycle`, `snapshot`, `supervisor`), `daemon.http.metrics` helpers, and the top-level modules
(settings, clock, errors, logs). Never `runtime.daemon` or `runtime.wiring`: a stage receives its
collaborators and never reaches back into the daemon. VMS is reached through the `QuotaWriter`
protocol handed in, never through vastpy.
"""

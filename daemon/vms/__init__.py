"""The VAST VMS boundary: the only package that imports `vastpy`. `collector` polls a cluster
(validated `Observation`s, cluster capacity, ingest) and carries the write calls the actuator uses
(`stages.actuator.QuotaWriter`).

May import: `forecasting.types`, `daemon.runtime.cycle` (the `PollResult` it produces) and the
top-level modules (settings, clock, errors, logs). Never a stage, HTTP or the daemon.
"""

"""The runtime: the `Daemon` (composition root), `wiring` (builds every stage with explicit
collaborators), the cycle's data and the `Stage` protocol (`cycle`), the poll loop (`poller`),
supervised tasks (`supervisor`), the immutable `snapshot`, `/healthz` logic (`health`) and
systemd notifications (`sdnotify`).

May import: every other `quotapilot.daemon` package, `forecasting`, `alerts`. The low layer
(`cycle`, `snapshot`, `supervisor`, `poller`, `health`, `sdnotify`) imports no stage, no HTTP and
neither `daemon` nor `wiring`; only `daemon` and `wiring` know the stages.
"""

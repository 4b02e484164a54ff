"""quotapilot.alerts: deciding what to tell people, and getting it to them.

What it owns:

- `rules.py` — the alert rules and their state machine (pending → firing → resolved, hysteresis,
  re-notification); `model.py` — the plain data (severities, states, notifications);
  `routing.py` — which sinks get a notification, quiet windows; `formats.py` and `words.py` —
  the payloads (our JSON schema, Alertmanager v2, Slack) and times/durations in words. All pure:
  plain data and `now` in, plain data out; no asyncio, no IO.
- `dispatcher.py` — delivery from a durable outbox, one worker per sink, at least once, with
  backoff; it depends on an `Outbox` protocol, `now`/`sleep` callables and a `backoff` callable,
  all injected by the daemon.
- `errors.py` — the one delivery error hierarchy (`SinkUnavailable`, `SinkRejected`, ...).
- `sinks/` — the only code here that talks to brokers and webhook receivers.

What it may import: the standard library, structlog, `quotapilot.forecasting.types` (plain
target types), and — in `sinks/` only — aiohttp, aiomqtt and paho. Never `quotapilot.daemon`:
the daemon builds the dispatcher and passes in its store, clock and retry policy, so this package
runs (and is tested) without it.
"""

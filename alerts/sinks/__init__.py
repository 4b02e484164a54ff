"""quotapilot.alerts.sinks: the only code in quotapilot that talks to brokers and webhook receivers.

- `webhook.py` — HTTP(S) POST of a notification (generic JSON, Alertmanager v2, Slack), aiohttp;
- `mqtt.py` — alert events, retained per-target state and a retained online/offline status on an
  MQTT broker, aiomqtt (public API only; reconnecting lives outside the client);
- `log.py` — every notification as a structured log line (`alert.notified`).

Each sink implements the dispatcher's `Sink` protocol and translates every third-party error into
`quotapilot.alerts.errors` (`raise ... from exc`). May import: the stdlib, structlog, aiohttp,
aiomqtt/paho and `quotapilot.alerts` (`errors`, `formats`); never `quotapilot.daemon`, never the
dispatcher (it calls the sinks, not the other way round).
"""

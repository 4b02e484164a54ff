"""quotapilot.alerts: alert rules (pure), the outbox dispatcher and the webhook / MQTT sinks."""

"""The state store: the only code that touches SQLite.

May import: `forecasting.types`, `alerts` data types (outbox rows, alert states). Never a stage,
HTTP, VMS or the runtime.
"""

"""The state store: the only code that touches SQLite."""

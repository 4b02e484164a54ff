"""quotapilot.daemon: the runtime — settings, CLI, supervisor, collector, store, actuator, HTTP, simulator."""

__version__ = "0.1.0"

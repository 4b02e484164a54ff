"""Alert sinks: the only code that talks to brokers and webhook receivers."""

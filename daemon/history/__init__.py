"""Usage history from Prometheus: the client, the import into the store, the warm start."""

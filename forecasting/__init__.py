"""quotapilot.forecasting: pure models — plain data and `now` in, plain data out. No asyncio, no IO."""

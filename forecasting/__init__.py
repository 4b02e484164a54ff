"""quotapilot.forecasting: the pure models behind every forecast and growth decision.

It owns: turning irregular usage samples into step rates (`resample`), learning each series
incrementally and refitting it (`series`), the exponential-smoothing models, their held-out
selection and bands (`hw`), cumulative paths and runways (`runway`), the labelled stopgap line
before the first fit (`stopgap`), and the growth planner (`planner`).

Plain data and `now` in, plain data out: this package never imports `quotapilot.daemon`,
asyncio, or anything that does IO (files, sockets, databases, clocks).
"""

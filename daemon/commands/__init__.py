"""The CLI verbs, one module per verb: `run`, `check_config`, `demo`, `forecast`, `simulator`,
`client` (status / pause / resume / preflight against a running daemon).

May import anything in `quotapilot` (they are the outermost layer); nothing imports them except
`daemon.cli`. Heavy imports stay inside the command functions so `quotapilot --help` is fast.
"""

"""The built-in VAST VMS simulator: the embedded default every other part runs against."""

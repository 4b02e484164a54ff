"""`python -m quotapilot.daemon` is the `quotapilot` command."""

from quotapilot.daemon.cli import main

raise SystemExit(main())

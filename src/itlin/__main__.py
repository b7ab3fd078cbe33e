"""``python -m itlin``: the command line of :mod:`itlin.cli`."""

from itlin.cli import main

raise SystemExit(main())

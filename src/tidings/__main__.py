"""``python -m tidings``: the same command line as the ``tidings`` script."""

from __future__ import annotations

from tidings.cli import main

raise SystemExit(main())

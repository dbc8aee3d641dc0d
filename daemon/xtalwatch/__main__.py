"""``python -m xtalwatch`` is the same as the ``xtalwatch`` command."""

from xtalwatch.cli import main

raise SystemExit(main())

"""``python -m sslandmarks`` behaves exactly like the ``sslandmarks`` console script."""

from sslandmarks.cli import main

raise SystemExit(main())

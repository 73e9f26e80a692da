"""`python -m mils`: the same as the `mils` console script."""

from mils.cli import main

raise SystemExit(main())

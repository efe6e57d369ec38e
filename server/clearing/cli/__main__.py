"""`python -m clearing.cli ...`: the `clearing` command."""

from clearing.cli import main

raise SystemExit(main())

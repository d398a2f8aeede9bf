"""`python -m ferry` is the `ferry` command."""

from ferry.cli import main

raise SystemExit(main())

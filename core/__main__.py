"""`python -m lunarseg` is the same as the `lunarseg` command."""
from lunarseg.cli import main

raise SystemExit(main())

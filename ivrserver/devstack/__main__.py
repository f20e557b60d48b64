"""`python -m ivrserver.devstack run | up | call` (what `make run` and `make call` execute)."""

from ivrserver.devstack.cli import main

raise SystemExit(main())

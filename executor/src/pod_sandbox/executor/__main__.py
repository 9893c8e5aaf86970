"""``python -m pod_sandbox.executor``."""

from .cli import main

raise SystemExit(main())

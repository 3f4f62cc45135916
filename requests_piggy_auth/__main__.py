"""``python -m requests_piggy_auth``: the ``piggy-auth`` command."""

from .cli import main

raise SystemExit(main())

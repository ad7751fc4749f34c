"""``python -m darknetpy``: the darknetpy command line."""

from .cli import main

raise SystemExit(main())

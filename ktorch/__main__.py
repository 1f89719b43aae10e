"""`python -m ktorch ...`: the same as the `ktorch` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())

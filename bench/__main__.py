"""``python -m bench``: run every benchmark (``BENCH_QUICK=1`` for the small version)."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main())

"""Shared pytest setup. Imports no framework: each test module imports what it needs."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests are about numbers, not speed: keep thread pools small so the two pytest workers share
# the two cores instead of oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Property tests draw the same examples on every run (derandomize) and keep no example database,
# so a CI failure reproduces exactly on any machine. HYPOTHESIS_PROFILE=explore searches afresh.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

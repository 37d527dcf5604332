"""Test-session settings shared by every test package."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# A noisy 2-core CI machine: no per-example deadline (timing is measured by benchmarks, never
# asserted by tests), and a fixed example budget so the suite stays well under its time limit.
settings.register_profile(
    "capflow",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("capflow"), max_examples=2000)
settings.load_profile(os.environ.get("CAPFLOW_HYPOTHESIS_PROFILE", "capflow"))

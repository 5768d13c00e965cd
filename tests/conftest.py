"""Shared test settings: a deterministic hypothesis profile sized for the 2-core CI machine."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "15")), deadline=None,
    derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

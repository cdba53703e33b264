"""Shared test settings. Tests import the installed genesis_ops (pytest runs in importlib mode)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GENESIS_HYPOTHESIS_PROFILE", "default"))

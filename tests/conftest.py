"""Shared test configuration: one fixed, derandomized hypothesis profile.

Property tests then draw the same examples on every run and every machine,
so a failure always reproduces and CI never flakes.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "detlearn",
    derandomize=True,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("detlearn")

"""sipproxy's tests: twisted.trial TestCases that pytest and trial both run."""
from hypothesis import HealthCheck, settings

# Property tests check behaviour, never speed: a loaded CI machine (or PyPy
# before its JIT warms up) must not fail them on wall-clock health checks
# or per-example deadlines. Tests may still set their own example counts.
settings.register_profile("sipproxy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sipproxy")

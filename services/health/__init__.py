"""Health and metrics for every service process (``services.health.server``, ``.checks``)."""

from services.health.checks import Check, CheckResult, Health
from services.health.server import HealthPortTaken, serving

__all__ = ["Check", "CheckResult", "Health", "HealthPortTaken", "serving"]

"""Intake: inbound provider messages become customers, conversations and routing requests.

``consumer`` records a message, ``settling`` acks, redelivers and parks it, ``worker`` pulls
it from NATS; ``plan`` decides what to append from a customer's history
(pure); ``language`` and ``rules`` triage the message."""

from services.intake.consumer import Intake
from services.intake.settling import register

__all__ = ["Intake", "register"]

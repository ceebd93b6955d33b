"""Intake: inbound provider messages become customers, conversations and routing requests.

``consumer`` runs it on NATS; ``plan`` decides what to append from a customer's history
(pure); ``language`` and ``rules`` triage the message."""

from services.intake.consumer import Intake, register

__all__ = ["Intake", "register"]

"""Conformance kit for connector authors: subclass ``ConnectorConformance`` (see ``connectors/README.md``)."""

from .harness import Harness, SampleRequest
from .helpers import (
    FakeProvider,
    Published,
    RecordedRequest,
    ReportedOutcome,
    read_inbound,
    read_outcomes,
    wait_for_outcome,
)
from .kit import ConnectorConformance

__all__ = [
    "ConnectorConformance",
    "FakeProvider",
    "Harness",
    "Published",
    "RecordedRequest",
    "ReportedOutcome",
    "SampleRequest",
    "read_inbound",
    "read_outcomes",
    "wait_for_outcome",
]

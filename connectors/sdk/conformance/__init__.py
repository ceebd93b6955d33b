"""Conformance kit for connector authors: subclass ``ConnectorConformance`` (see ``connectors/README.md``)."""

from .helpers import FakeProvider, Published, RecordedRequest, read_inbound
from .kit import ConnectorConformance, Harness, SampleRequest

__all__ = [
    "ConnectorConformance",
    "FakeProvider",
    "Harness",
    "Published",
    "RecordedRequest",
    "SampleRequest",
    "read_inbound",
]

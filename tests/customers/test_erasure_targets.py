"""The API erases (and exports) where the connectors keep a customer's data: found while adding
the export, it used the default chat stream and attachment bucket whatever the config said."""

from __future__ import annotations

from services.api.common import ApiDeps
from services.customers.erase import ErasureTargets


def test_the_apis_erasure_targets_follow_the_connectors_tables() -> None:
    tables = {
        "chat": {"history_stream": "SITE_CHAT", "history_subject": "site.chat", "port": 8083},
        "email": {"attachment_bucket": "site_files"},
    }
    targets = ErasureTargets.from_connectors(tables)
    assert (targets.chat_stream, targets.chat_subject, targets.attachment_bucket) == (
        "SITE_CHAT",
        "site.chat",
        "site_files",
    )
    assert ErasureTargets.from_connectors({}) == ErasureTargets()
    # What the API hands it: ApiDeps.connectors, the [connectors.<name>] tables.
    assert "connectors" in ApiDeps.__dataclass_fields__

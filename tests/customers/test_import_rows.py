"""The importer's pure parts: reading lines, checking them, grouping lines that share an identity."""

from __future__ import annotations

from typing import Any

import pytest

from services.customers.import_rows import LineError, Row, RowError, parse_row, read_records
from services.customers.importer import lanes
from services.customers.service import Customers
from services.identity import IdentityDirectory


class NoKV:
    pass


CUSTOMERS = Customers(store=None, directory=IdentityDirectory(NoKV()))  # type: ignore[arg-type]


def row(line: int, *identities: str) -> Row:
    return Row(line, identities, {})


def test_lines_sharing_an_identity_directly_or_through_others_share_a_lane_in_file_order() -> None:
    rows = [row(2, "a", "b"), row(3, "c"), row(4, "d", "b"), row(5, "c", "e"), row(6, "f"), row(7, "d")]
    assert [[r.line for r in lane] for lane in lanes(rows)] == [[2, 4, 7], [3, 5], [6]]


def test_csv_lines_keep_their_numbers_and_unknown_columns_are_listed() -> None:
    ignored: list[str] = []
    text = 'Identity,Tier,Name\nsms:+15551234567,gold,Ann\n\n"email:bo@example.com",,"Bo, Jr."\nx,y,z,extra\n'
    records = list(read_records(text, "csv", ignored))
    assert [n for n, _ in records] == [2, 4, 5]
    assert ignored == ["name"]
    assert records[0][1] == {"identity": "sms:+15551234567", "tier": "gold"}
    assert isinstance(records[2][1], LineError)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({}, "no identity"),
        ({"identity": "sms:+15551234567", "tier": "Diamond"}, "unknown tier 'diamond'"),
        ({"identity": "sms:+15551234567", "flags": "vip"}, "unknown flags vip"),
        ({"identity": "sms:+15551234567", "preferred_language": "english please"}, "is not a language code"),
        ({"identities": ["sms:+15551234567", "email:nope"]}, "identity 2 (email:…): not an email address"),
        ({"identities": 42}, "identities must be text or a list of text"),
        ({"identity": "sms:+15551234567", "crm_id": 7}, "crm_id must be text"),
    ],
)
def test_bad_lines_say_why(record: dict[str, Any], reason: str) -> None:
    with pytest.raises(RowError, match=None) as caught:
        parse_row(9, record, CUSTOMERS)
    assert reason in str(caught.value)


def test_a_good_line() -> None:
    parsed = parse_row(
        3,
        {
            "identities": "sms:+1 555 123 4567; email:Ann@Example.com|whatsapp:15551234567",
            "tier": "Gold",
            "flags": "media_attention regulatory_risk",
            "preferred_language": "pt_BR",
            "crm_id": " CRM-1 ",
        },
        CUSTOMERS,
    )
    assert parsed.identities == ("phone:+15551234567", "email:Ann@example.com")
    assert parsed.profile == {
        "tier": "gold",
        "flags": ("media_attention", "regulatory_risk"),
        "preferred_language": "pt-BR",
        "crm_id": "CRM-1",
    }

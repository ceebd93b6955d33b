"""Pure parts of the Meta connector: signature, payload parsing, the messaging window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from connectors.sdk import Malformed
from connectors.social import window
from connectors.social.batch import UNSUPPORTED_TEXT
from connectors.social.payload import PayloadParser
from connectors.social.signature import sign, valid
from events.model import InboundMessage
from services.identity.addresses import identity_for

from .payloads import (
    APP_SECRET,
    IG_ID,
    PAGE_ID,
    PHONE_NUMBER_ID,
    VECTOR_BODY,
    VECTOR_MID,
    VECTOR_SIGNATURE,
    dumps,
    feed_comment,
    ig_comment,
    messaging,
    page_batch,
    page_entry,
    wa_status,
    wa_text,
    whatsapp,
)

NOW = datetime(2023, 11, 15, 0, 0, tzinfo=UTC)


def parse(payload: object) -> tuple[list[InboundMessage], dict[str, int]]:
    batch = PayloadParser("https://graph.example/v21.0").parse(payload, NOW)
    return list(batch.messages), dict(batch.counts)


# -- signature --------------------------------------------------------------------------


def test_wire_format_vector() -> None:
    assert sign(APP_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    assert valid(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)
    assert valid(APP_SECRET, VECTOR_BODY, VECTOR_SIGNATURE.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        VECTOR_SIGNATURE.removeprefix("sha256="),  # no prefix
        "sha1=" + VECTOR_SIGNATURE.removeprefix("sha256="),
        VECTOR_SIGNATURE[:-1] + "0",
        VECTOR_SIGNATURE + "00",
        "sha256=" + "zz" * 32,
        "sha256=ÿ" + "0" * 63,
    ],
)
def test_bad_signatures(header: str | None) -> None:
    assert not valid(APP_SECRET, VECTOR_BODY, header)


def test_signature_is_over_raw_bytes_not_reserialised_json() -> None:
    # Meta escapes non-ASCII; the same JSON with the characters unescaped is other bytes.
    escaped = b'{"text":"caf\\u00e9"}'
    unescaped = json.dumps(json.loads(escaped), ensure_ascii=False).encode()
    assert not valid(APP_SECRET, unescaped, sign(APP_SECRET, escaped))
    assert not valid("", escaped, sign("", escaped)), "no secret configured: nothing is valid"


# -- Messenger / Instagram ------------------------------------------------------------------


def test_vector_payload() -> None:
    [m], counts = parse(json.loads(VECTOR_BODY))
    assert counts == {}
    assert m.provider_message_id == VECTOR_MID
    assert (m.channel, m.provider, m.sender, m.recipient, m.text) == (
        "social",
        "meta",
        "PSID_1",
        "PAGE_ID",
        "hello, world!",
    )
    sent = datetime.fromtimestamp(1458692752.478, UTC).isoformat()
    assert m.metadata == {"platform": "messenger", "kind": "message", "page_id": "PAGE_ID", "provider_at": sent}
    assert m.at == NOW, "when the connector received it; Meta's time is metadata only"
    assert m.public is False


def test_batch_with_echo_duplicate_standby_and_receipts() -> None:
    payload = page_batch(
        page_entry(messaging("PSID_1", "m1", "one"), messaging("PSID_1", "m0", "our reply", echo=True)),
        page_entry(
            messaging("PSID_2", "m2", "two"),
            messaging("PSID_1", "m1", "one"),  # the same mid again
            {"sender": {"id": "PSID_2"}, "recipient": {"id": PAGE_ID}, "timestamp": 1, "read": {"watermark": 1}},
            {"sender": {"id": "PSID_2"}, "recipient": {"id": PAGE_ID}, "timestamp": 1, "delivery": {"mids": ["x"]}},
        ),
        page_entry(messaging("PSID_3", "m3", "three"), key="standby"),
    )
    messages, counts = parse(payload)
    assert [m.provider_message_id for m in messages] == ["m1", "m2", "m3"]
    assert counts == {"echo": 1, "receipt": 2, "batch_duplicate": 1}
    assert messages[2].metadata["standby"] == "true"


def test_attachments_postbacks_and_unknown_items() -> None:
    image = {"type": "image", "payload": {"url": "https://cdn.example/i.jpg"}}
    payload = page_batch(
        page_entry(
            messaging("PSID_1", "m1", "", attachments=[image], reply_to={"mid": "m0"}),
            {
                "sender": {"id": "PSID_1"},
                "recipient": {"id": PAGE_ID},
                "timestamp": 5,
                "postback": {"mid": "pb1", "title": "Talk to a human", "payload": "HUMAN"},
            },
            {"sender": {"id": "PSID_1"}, "recipient": {"id": PAGE_ID}, "timestamp": 6, "message": {"text": "no mid"}},
            {"sender": {"id": "PSID_1"}, "recipient": {"id": PAGE_ID}, "timestamp": 7, "optin": {"ref": "x"}},
            "not an object",  # type: ignore[arg-type]  # Meta never sends this; still no crash
        )
    )
    messages, counts = parse(payload)
    assert [m.provider_message_id for m in messages] == ["m1", "pb1"]
    att = messages[0].attachments[0]
    assert (att.url, att.content_type, att.name) == ("https://cdn.example/i.jpg", "image/*", "image")
    assert messages[0].thread_ref == "m0"
    assert messages[1].text == "Talk to a human"
    assert messages[1].metadata["postback_payload"] == "HUMAN"
    assert counts == {"skipped": 1, "ignored_event": 2}


def test_instagram_message() -> None:
    payload = page_batch(page_entry(messaging("IGSID_1", "aWdfZAG1", "hola", page=IG_ID), page=IG_ID), obj="instagram")
    [m], _ = parse(payload)
    assert m.metadata == {
        "platform": "instagram",
        "kind": "message",
        "page_id": IG_ID,
        "provider_at": "2023-11-14T22:13:20+00:00",
    }
    assert m.sender == "IGSID_1"


# -- WhatsApp ---------------------------------------------------------------------------


def test_whatsapp_text() -> None:
    [m], counts = parse(whatsapp([wa_text("wamid.A", "¿Dónde está mi pedido?")]))
    assert counts == {}
    assert m.provider_message_id == "wamid.A"
    assert m.sender == "+15551230000"
    assert m.sender_name == "Ana Pérez"
    assert m.text == "¿Dónde está mi pedido?"
    assert m.metadata["platform"] == "whatsapp"
    assert m.metadata["phone_number_id"] == PHONE_NUMBER_ID
    assert m.at == NOW
    assert m.metadata["provider_at"] == datetime.fromtimestamp(1_700_000_000, UTC).isoformat()


def test_whatsapp_statuses_only_is_nothing() -> None:
    batch = PayloadParser().parse(whatsapp(statuses=[wa_status("wamid.S1"), wa_status("wamid.S2", "read")]), NOW)
    assert batch.messages == []
    assert dict(batch.counts) == {"status": 2}
    assert batch.statuses == [("wamid.S1", "delivered"), ("wamid.S2", "read")]


def test_whatsapp_media_interactive_reaction() -> None:
    image = {
        "from": "15551230000",
        "id": "wamid.I",
        "timestamp": "1700000000",
        "type": "image",
        "image": {"id": "MEDIA_9", "mime_type": "image/jpeg", "sha256": "abc", "caption": "broken"},
    }
    button = {
        "from": "15551230000",
        "id": "wamid.B",
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
    }
    reaction = {
        "from": "15551230000",
        "id": "wamid.R",
        "timestamp": "1700000000",
        "type": "reaction",
        "reaction": {"message_id": "wamid.X", "emoji": "👍"},
    }
    messages, counts = parse(whatsapp([image, button, reaction]))
    assert [m.provider_message_id for m in messages] == ["wamid.I", "wamid.B"]
    att = messages[0].attachments[0]
    assert (att.url, att.content_type) == ("https://graph.example/v21.0/MEDIA_9", "image/jpeg")
    assert messages[0].text == "broken"
    assert messages[1].text == "Yes" and messages[1].metadata["reply_payload"] == "yes"
    assert counts == {"reaction": 1}


def test_a_message_meta_cannot_show_is_said_not_dropped_or_blank() -> None:
    """Found by an audit: WhatsApp's ``unsupported`` was dropped (the customer's contact left
    no trace) and Messenger's ``is_unsupported`` came through as an empty message."""
    unsupported = {"from": "15551230000", "id": "wamid.U", "timestamp": "1700000000", "type": "unsupported"}
    [wa], counts = parse(whatsapp([unsupported]))
    assert (wa.provider_message_id, wa.text, wa.metadata["unsupported"]) == ("wamid.U", UNSUPPORTED_TEXT, "1")
    assert counts == {}
    [fb], _ = parse(page_batch(page_entry(messaging("PSID_1", "m_unsup", "", is_unsupported=True))))
    assert (fb.provider_message_id, fb.text, fb.metadata["unsupported"]) == ("m_unsup", UNSUPPORTED_TEXT, "1")


def test_a_messenger_edit_comes_through_as_the_new_words_naming_what_it_edits() -> None:
    edit = {
        "sender": {"id": "PSID_1"},
        "recipient": {"id": PAGE_ID},
        "timestamp": 1_700_000_000_000,
        "message_edit": {"mid": "m_a1", "text": "first edited", "num_edit": 1},
    }
    [m], _ = parse(page_batch(page_entry(edit)))
    assert (m.provider_message_id, m.text, m.metadata["edit_of"]) == ("m_a1:edit:1", "first edited", "m_a1")
    assert m.sender == "PSID_1"


# -- public -----------------------------------------------------------------------------


def test_page_comment_is_public() -> None:
    [m], _ = parse(feed_comment("POST_1_COMMENT_1"))
    assert m.public is True
    assert m.provider_message_id == "POST_1_COMMENT_1"
    assert (m.sender, m.sender_name, m.thread_ref) == ("USER_1", "Sam Doe", "PAGE_ID_POST_1")
    assert m.metadata == {
        "platform": "facebook",
        "kind": "comment",
        "page_id": PAGE_ID,
        "comment_id": "POST_1_COMMENT_1",
        "post_id": "PAGE_ID_POST_1",
        "provider_at": "2023-11-14T22:13:20+00:00",
    }
    assert m.at == NOW


def test_page_post_own_post_and_edits() -> None:
    [post], _ = parse(feed_comment("", item="post", post_id="PAGE_ID_POST_2"))
    assert post.public and post.provider_message_id == "PAGE_ID_POST_2"
    assert parse(feed_comment("C2", author=PAGE_ID)) == ([], {"own_post": 1})
    assert parse(feed_comment("C3", verb="edited")) == ([], {"ignored_feed": 1})


def test_instagram_comment_is_public() -> None:
    [m], _ = parse(ig_comment("IG_COMMENT_1"))
    assert m.public is True
    assert (m.provider_message_id, m.sender_name) == ("IG_COMMENT_1", "sam.shops")
    assert m.metadata["platform"] == "instagram" and m.metadata["kind"] == "comment"
    assert parse(ig_comment("IG_COMMENT_2", author=IG_ID)) == ([], {"own_post": 1})


# -- malformed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [[], "x", {"entry": []}, {"object": "page"}, {"object": "page", "entry": {}}, {"object": "page", "entry": [1]}],
)
def test_structural_problems_are_malformed(payload: object) -> None:
    with pytest.raises(Malformed):
        PayloadParser().parse(payload, NOW)


def test_unknown_object_and_bad_timestamps() -> None:
    assert parse({"object": "user", "entry": [{"id": "1"}]}) == ([], {"ignored_object": 1})
    [m], _ = parse(page_batch(page_entry(messaging("PSID_1", "m1", "x", ts=10**15))))
    assert m.at == NOW, "a timestamp in the future is not trusted"
    [m], _ = parse(json.loads(dumps(whatsapp([wa_text("wamid.T", "x", ts="soon")]))))
    assert m.at == NOW
    assert "provider_at" not in m.metadata


# Meta's clock, or a forger's: 1970, before 1970, 2099, seconds sent as milliseconds, ms past
# any calendar, a leap second's 60, an offset that is none. Whatever it says, the message is
# dated when the connector received it (what orders, retains and measures it: a message dated
# 1970 was erased at once under [retention] message_days, its first response time 56 years).
HOSTILE_TIMES = [0, -1, -86_400_000, 1, 4_070_908_800_000, 1_700_000_000, 10**20, 2**63, "1e400", "60", "+99:99"]


@pytest.mark.parametrize("ts", HOSTILE_TIMES)
def test_metas_time_is_never_the_messages_time(ts: object) -> None:
    messages = [
        *parse(page_batch(page_entry(messaging("PSID_1", "m1", "x", ts=ts))))[0],  # type: ignore[arg-type]
        *parse(json.loads(dumps(whatsapp([wa_text("wamid.T", "x", ts=str(ts))]))))[0],
    ]
    assert [m.at for m in messages] == [NOW, NOW]
    for m in messages:
        if "provider_at" in m.metadata:  # what Meta said, as a time: metadata only
            datetime.fromisoformat(m.metadata["provider_at"])


# -- window ------------------------------------------------------------------------------


def iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


def test_window_inside_and_unknown() -> None:
    assert window.check("messenger", iso(timedelta(hours=23)), NOW).ok
    assert window.check("whatsapp", None, NOW).ok
    assert window.check("whatsapp", (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), NOW).ok
    assert window.check("whatsapp", iso(timedelta(hours=30)), NOW, window_hours=0).ok


def test_window_outside() -> None:
    d = window.check("whatsapp", iso(timedelta(hours=30)), NOW)
    assert not d.ok
    assert "outside the 24-hour messaging window" in d.reason and "template" in d.reason
    d = window.check("messenger", iso(timedelta(hours=25)), NOW)
    assert not d.ok and "human_agent_tag" in d.reason
    d = window.check("messenger", iso(timedelta(days=3)), NOW, human_agent_tag=True)
    assert d.ok and (d.messaging_type, d.tag) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert not window.check("instagram", iso(timedelta(days=8)), NOW, human_agent_tag=True).ok
    assert not window.check("whatsapp", "yesterday", NOW).ok


# -- identity: what intake makes of the sender -------------------------------------------


def test_whatsapp_sender_resolves_in_the_phone_space_shared_with_sms() -> None:
    [wa], _ = parse(whatsapp([wa_text("wamid.ID", "hi")]))
    [fb], _ = parse(json.loads(VECTOR_BODY))
    assert identity_for(wa.channel, wa.sender, platform=wa.metadata.get("platform")) == "phone:+15551230000"
    assert identity_for("sms", "+15551230000") == identity_for(wa.channel, wa.sender, platform="whatsapp")
    assert identity_for("sms", "whatsapp:+15551230000", platform="whatsapp") == "phone:+15551230000"
    assert identity_for(fb.channel, fb.sender, platform=fb.metadata.get("platform")) == "social:PSID_1"

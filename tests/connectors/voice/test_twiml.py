"""The TwiML the voice connector answers with: well-formed, escaped, the verbs Twilio documents."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from connectors.voice import twiml


@pytest.mark.parametrize(
    ("endpoint", "noun", "value"),
    [
        ("client:ava", "Client", "ava"),
        ("sip:bea@pbx.example.com;transport=tls", "Sip", "sip:bea@pbx.example.com;transport=tls"),
        ("+15553334444", "Number", "+15553334444"),
        ("tel:+15553334444", "Number", "+15553334444"),
    ],
)
def test_dial_reaches_a_phone_a_sip_address_or_a_twilio_client(endpoint: str, noun: str, value: str) -> None:
    root = ET.fromstring(twiml.dial(endpoint, timeout=15, action="/twilio/voice/status"))
    dial = root.find("Dial")
    assert dial is not None and (dial.get("timeout"), dial.get("action")) == ("15", "/twilio/voice/status")
    assert dial.findtext(noun) == value


def test_text_and_attributes_are_escaped() -> None:
    document = twiml.greeting_menu('Welcome to "Ben & Jerry\'s" <support>', "Press 1", "/q?a=1&b=2")
    root = ET.fromstring(document)
    assert root.findtext("Gather/Say") == 'Welcome to "Ben & Jerry\'s" <support>'
    assert root.find("Gather").get("action") == "/q?a=1&b=2"  # type: ignore[union-attr]
    assert root.findtext("Redirect") == "/q?a=1&b=2"


def test_enqueue_names_the_queue_and_the_hold_music() -> None:
    root = ET.fromstring(twiml.enqueue("relaydesk", "/twilio/voice/wait", "/twilio/voice/left"))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "relaydesk"
    assert (enqueue.get("waitUrl"), enqueue.get("action")) == ("/twilio/voice/wait", "/twilio/voice/left")
    assert (
        ET.fromstring(twiml.hold("https://example.com/music.mp3")).findtext("Play") == "https://example.com/music.mp3"
    )

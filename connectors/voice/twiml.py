"""TwiML documents the voice connector answers with, built from plain values.

Only the verbs the call flow needs (Twilio's TwiML reference): ``<Say>``, ``<Gather>``,
``<Redirect>``, ``<Enqueue>``, ``<Play>``, ``<Leave>``, ``<Dial>`` with ``<Number>``, ``<Sip>``
or ``<Client>``, ``<Record>``, ``<Hangup>``. Every text and attribute is XML-escaped here, so
callers pass raw strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def _attrs(attrs: Mapping[str, str | int | None]) -> str:
    return "".join(f" {name}={quoteattr(str(value))}" for name, value in attrs.items() if value not in (None, ""))


def verb(name: str, body: str = "", **attrs: str | int | None) -> str:
    """``<name attrs>body</name>``; ``body`` is already TwiML (escape text with ``say``)."""
    return f"<{name}{_attrs(attrs)}>{body}</{name}>" if body else f"<{name}{_attrs(attrs)}/>"


def say(text: str, language: str = "") -> str:
    return verb("Say", escape(text), language=language or None) if text else ""


def response(*verbs: str) -> str:
    return XML_HEAD + "<Response>" + "".join(verbs) + "</Response>"


def greeting_menu(greeting: str, menu_prompt: str, action: str, timeout: int = 5) -> str:
    """Greeting and the language menu (one key press); no key: the action without Digits."""
    gather = verb("Gather", say(greeting) + say(menu_prompt), numDigits=1, action=action, timeout=timeout)
    return response(gather, verb("Redirect", escape(action)))


def enqueue(queue: str, wait_url: str, action: str, message: str = "", language: str = "") -> str:
    """Into the named Twilio queue, with ``wait_url`` played while waiting (hold music)."""
    return response(say(message, language), verb("Enqueue", escape(queue), waitUrl=wait_url, action=action))


def hold(music_url: str, message: str = "", language: str = "") -> str:
    """One round of hold music; Twilio asks the waitUrl again when it ends."""
    return response(say(message, language), verb("Play", escape(music_url)) if music_url else verb("Pause", length=10))


def leave_queue() -> str:
    return response(verb("Leave"))


def dial(endpoint: str, *, timeout: int = 20, caller_id: str = "", action: str = "", message: str = "") -> str:
    """Connect the call to an agent's endpoint: ``client:<identity>``, ``sip:<uri>`` or a phone number."""
    return response(
        say(message), verb("Dial", dial_target(endpoint), timeout=timeout, callerId=caller_id, action=action)
    )


def dial_target(endpoint: str) -> str:
    """The noun inside ``<Dial>`` for an agent endpoint as written in the config."""
    value = endpoint.strip()
    lowered = value.lower()
    if lowered.startswith("client:"):
        return verb("Client", escape(value[len("client:") :]))
    if lowered.startswith(("sip:", "sips:")):
        return verb("Sip", escape(value))
    if lowered.startswith("tel:"):
        value = value[len("tel:") :]
    return verb("Number", escape(value))


def after_wait_menu(prompt: str, action: str, timeout: int = 5) -> str:
    """No agent within the wait limit: press 1 for a callback, else the voicemail (the action without Digits)."""
    return response(
        verb("Gather", say(prompt), numDigits=1, action=action, timeout=timeout), verb("Redirect", escape(action))
    )


def record(prompt: str, action: str, transcribe_callback: str, max_length: int = 120) -> str:
    return response(
        say(prompt),
        verb(
            "Record",
            action=action,
            maxLength=max_length,
            playBeep="true",
            transcribe="true" if transcribe_callback else None,
            transcribeCallback=transcribe_callback or None,
        ),
    )


def goodbye(message: str, language: str = "") -> str:
    return response(say(message, language), verb("Hangup"))

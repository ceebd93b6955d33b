"""``[connectors.voice]``: the Twilio Voice connector's settings."""

from __future__ import annotations

from connectors.sms.twilio import TwilioSettings

# Twilio's own default hold music (the TwiML <Enqueue> documentation's waitUrl default).
TWILIO_HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"


class VoiceSettings(TwilioSettings, kw_only=True):
    port: int = 8086  # the next free one after sms 8081, social 8082, chat 8083, email 8085
    # The Twilio account (TwilioSettings: auth_token, account_sid, signing_key_secret,
    # public_base_url, api_base_url) checks webhook signatures and calls the Calls API;
    # TwiML links use public_base_url.
    # What the caller hears, then the language menu: key -> language code. One entry (or none)
    # skips the menu. No key pressed: ``default_language``.
    greeting: str = "Thank you for calling. Please hold for the next available agent."
    menu_prompt: str = ""
    languages: dict[str, str] = {}
    default_language: str = "en"
    queue_name: str = "relaydesk"
    hold_music_url: str = TWILIO_HOLD_MUSIC
    # Past this many seconds in the queue: the caller may ask for a callback or leave a voicemail.
    wait_limit_seconds: float = 180.0
    after_wait_prompt: str = (
        "All our agents are busy. Press 1 and we will call you back, or leave a message after the tone."
    )
    callback_message: str = "Thank you, an agent will call you back."
    # A caller with no number to know them by (withheld, "anonymous", a Twilio Client): told
    # so and not queued, since no conversation can be opened (or called back) for them.
    withheld_message: str = (
        "We cannot take calls from a withheld number. Please call again with your number shown, or write to us."
    )
    voicemail_message: str = "Thank you for your message. Goodbye."
    max_voicemail_seconds: int = 120
    # Agent id -> endpoint the call is bridged to: "client:<identity>", "sip:<uri>" or "+E164".
    agents: dict[str, str] = {}
    dial_timeout: int = 20
    # The number callbacks are placed from (a Twilio number of the account).
    caller_id: str = ""
    # Follow the log to bridge accepted calls (off: another process runs ``VoiceBridge``).
    bridge: bool = True

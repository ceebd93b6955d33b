"""Meta (Messenger, Instagram, WhatsApp Cloud API) connector: ``relaydesk connector social``."""

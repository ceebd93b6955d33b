"""The email channel: inbound SMTP (aiosmtpd), an optional IMAP poller, raw MIME over HTTP,
and replies sent by SMTP threaded under the customer's message. See ``connector.py``."""

"""What a ``DeliverReply`` asks of a connector, beyond ``text`` to ``contact``:

- ``attachments``: files to send with the text. Each ``Attachment.url`` is a short-lived
  signed public link to the file (``GET /v1/files/{token}`` on the API, no bearer needed),
  with ``name``, ``content_type`` and ``size``; a provider that fetches media by URL (Twilio
  MMS ``MediaUrl``, WhatsApp/Messenger ``link`` / ``url``) is handed the link, others download
  it and send the bytes (email: a MIME part). A connector that cannot send files fails the
  reply with a reason rather than sending the text alone.
- ``template`` (with ``template_values``, see ``template_values``): a provider-approved
  template message (WhatsApp) to send *instead of* ``text`` (which then holds a preview).
  Connectors without templates fail such a reply with a reason.
"""

from __future__ import annotations

import msgspec

from events.model import DeliverReply


def template_values(reply: DeliverReply) -> list[str] | None:
    """The values of ``reply.template``'s parameters, in order; None when they cannot be read
    (the customer was erased, or the command is malformed): do not send then."""
    try:
        values = msgspec.json.decode(reply.template_values or "[]", type=list[str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if reply.template is not None and len(values) != len(reply.template.parameters):
        return None
    return values

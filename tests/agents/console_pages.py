"""What the console's browser tests share: a conversation written as intake would write an
email (sender name, subject, an attachment), and where the README's screenshots go."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events.model import (
    Attachment,
    ConversationOpened,
    CustomerCreated,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.store import Append, EventStore

# `RELAYDESK_SCREENSHOTS=services/console/screenshots pytest tests/agents/test_console_*.py`
# refreshes the README's pictures; otherwise they go to the test's temporary folder.
SCREENSHOTS_ENV = "RELAYDESK_SCREENSHOTS"
WINDOW = (1280, 800)


def fit_window(driver: Any) -> None:
    """A page area of ``WINDOW`` (the window's frame is added on top)."""
    driver.set_window_size(*WINDOW)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * WINDOW[0] - inner[0], 2 * WINDOW[1] - inner[1])


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


async def open_message(
    store: EventStore,
    customer: str,
    conversation: str,
    *,
    channel: str,
    contact: str,
    sender: str,
    text: str,
    subject: str = "",
    attachment: Attachment | None = None,
    at: datetime | None = None,
    platform: str = "",
) -> None:
    """What intake appends for a customer's first message of a conversation (an email is
    assigned at once, a message on a live channel is offered first). ``at``: when the customer
    wrote (WhatsApp's window counts from it); ``platform``: e.g. whatsapp on the sms channel."""
    now = at or datetime.now(UTC)
    metadata = {"subject": subject, "sender_name": sender} if subject else {"sender_name": sender}
    if platform:
        metadata["platform"] = platform
    seq = await store.append(
        Append(
            ConversationOpened(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,
                contact=contact,
            ),
            expected=0,
        )
    )
    seq = await store.append(
        Append(
            MessageReceived(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,
                message_id=f"m-{conversation}",
                provider_message_id=f"<{conversation}@mail.example>",
                text=text,
                language="en",
                attachments=(attachment,) if attachment else (),
                metadata=metadata,
            ),
            expected=seq,
        )
    )
    await store.append(
        Append(
            RoutingRequested(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,
                requirements=Requirements(skills={"billing": 1}, language="en"),
            ),
            expected=seq,
        )
    )


async def create_customer(store: EventStore, customer: str, identity: str) -> None:
    """The customer's own record, as intake writes it for a new address."""
    await store.append(
        Append(CustomerCreated(at=datetime.now(UTC), customer_id=customer, identity=identity), expected=0)
    )

"""Where an agent's calls ring: the agent's profile (``AgentProfile.voice``, set with
``PATCH /v1/agents/{id}``), else ``[connectors.voice] agents``.

The profile is read when a call is bridged, not followed: the agent's events on
``rd.evt.a.<agent>`` are read with batched direct gets (no consumer) from where the last read
stopped, so a change made just before the call is always seen and each later read costs one
round trip. Only ``AgentProfileUpdated`` counts; status changes on the same subject are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import decode_log_event
from events.direct import DirectBatches
from events.model import AgentProfileUpdated
from events.skips import count_skip

log = structlog.get_logger("relaydesk.connector.voice.endpoints")

BATCH = 256


@dataclass
class _Known:
    through: int = 0  # the agent's subject is read up to this stream sequence
    voice: str = ""  # the last AgentProfileUpdated's voice ("" = none set)


class AgentEndpoints:
    def __init__(self, nc: NATS, configured: Mapping[str, str], *, timeout: float = 5.0) -> None:
        self.configured = configured
        self._direct = DirectBatches(nc, timeout)
        self._known: dict[str, _Known] = {}

    async def endpoint(self, agent_id: str) -> str:
        """The agent's profile endpoint, else the configured one, else "" (no endpoint). If the
        log cannot be read, the last profile value read (or the configured one) is used."""
        try:
            profile_voice = await self._profile_voice(agent_id)
        except Exception as err:  # the log unreadable for now: the call still rings somewhere
            log.warning("voice.profile_unread", agent_id=agent_id, error=type(err).__name__)
            count_skip("voice.profile_unread")
            known = self._known.get(agent_id)
            profile_voice = known.voice if known is not None else ""
        return profile_voice or self.configured.get(agent_id, "")

    async def _profile_voice(self, agent_id: str) -> str:
        known = self._known.setdefault(agent_id, _Known())
        subject = subjects.agent(agent_id)
        while True:
            answer = await self._direct.get(subjects.EVENTS_STREAM, subject, known.through + 1, BATCH)
            if answer is None:  # a server without batched direct gets: the config decides
                log.warning("voice.profile_unread", agent_id=agent_id, error="no batched direct get")
                count_skip("voice.profile_unread")
                return known.voice
            got, more = answer
            for seq, raw_subject, data, _headers in got:
                event = decode_log_event(data, subject=raw_subject)
                if isinstance(event, AgentProfileUpdated):
                    known.voice = event.profile.voice
                known.through = max(known.through, seq)
            if not more or not got:
                return known.voice

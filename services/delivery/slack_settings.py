"""``[slack]`` settings: the Slack app that posts offers and takes agents' answers.

One Slack app serves the whole team: its bot token posts and updates the offer messages
(``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``; scope ``chat:write``), its
signing secret verifies what Slack sends to ``/slack/interactions`` and ``/slack/events``, and
``users`` says which Slack user is which agent. The mapping lives here, in one table the
operator controls, rather than on each delivery endpoint: a Slack user acts as exactly one
agent wherever the message was posted (a channel or the agent's DM), and the DM of an agent is
found through the same table.
"""

from __future__ import annotations

import msgspec


class SlackSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # xoxb-…: the app's bot token (RELAYDESK_SLACK_BOT_TOKEN). Needed by endpoints that name a
    # `channel` (the Web API mode); incoming-webhook endpoints (`url`) do without.
    bot_token: str = ""
    # The app's signing secret (RELAYDESK_SLACK_SIGNING_SECRET): requests to /slack/… are
    # refused (401) unless signed with it; empty, both routes answer 404.
    signing_secret: str = ""
    # Also accepted, as a list or comma-separated (RELAYDESK_SLACK_EXTRA_SIGNING_SECRETS, or its
    # _FILE): the other secret while rotating, so no replica refuses what Slack signs meanwhile.
    extra_signing_secrets: list[str] | str = []
    # Slack user id -> Relaydesk agent id, e.g. users = { U0123ABCD = "ava" }.
    users: dict[str, str] = {}
    # Requests whose X-Slack-Request-Timestamp is further than this from our clock are refused.
    tolerance_seconds: float = 300.0
    # The Web API's base URL (a test points it at a fake Slack).
    api_url: str = "https://slack.com/api"

    def agent_for(self, slack_user: str) -> str | None:
        return self.users.get(slack_user)

    def slack_user_of(self, agent_id: str) -> str | None:
        """The agent's Slack user (for a DM), the first one mapped to it."""
        return next((user for user, agent in self.users.items() if agent == agent_id), None)

    @property
    def interactive(self) -> bool:
        return bool(self.signing_secret)


def endpoint_problems(endpoint_id: str, url: str, channel: str, slack: SlackSettings) -> list[str]:
    """What is wrong with a slack endpoint: an incoming webhook (``url``) or an app channel."""
    if url and channel:
        return [f"endpoint {endpoint_id}: slack takes a url (incoming webhook) or a channel (the app), not both"]
    if channel:
        problems = []
        if not slack.bot_token:
            problems.append(f"endpoint {endpoint_id}: a slack channel needs [slack] bot_token (xoxb-…)")
        if channel != "dm" and not channel.isalnum():
            problems.append(f"endpoint {endpoint_id}: channel is a Slack channel id (C0123ABCD) or 'dm'")
        if channel == "dm" and not slack.users:
            problems.append(f"endpoint {endpoint_id}: channel 'dm' needs [slack] users (Slack user id = agent id)")
        return problems
    if not url.startswith(("http://", "https://")):
        return [f"endpoint {endpoint_id}: slack needs an http(s) url (incoming webhook) or a channel"]
    return []

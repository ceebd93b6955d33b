"""A fake Freshdesk built from its documented API v2 shapes: tickets (create with
unique_external_id/name/phone, view, update, list), notes, a ticket's conversations, ticket
search by tag, API-key basic auth; and the webhook an automation rule sends (the ticket id, with
the shared secret in a custom header). Statuses: 2 open, 3 pending, 4 resolved, 5 closed.

The list (``GET /api/v2/tickets``) reads the database: filters ``requester_id``, ``email``,
``unique_external_id`` (a requester unknown to it is a 400 ``invalid_value``, as for an email),
``updated_since`` (without it, only tickets created in the last 30 days), ``order_by``
(``created_at`` by default), ``order_type`` (``desc``), ``per_page`` (30, up to 100) and
``page``. The search reads an index that lags (``search_lag`` seconds: "updates can take a few
minutes to be searchable"), so a ticket just created is not found by it.

Deletion as Freshdesk documents it: ``DELETE /api/v2/tickets/{id}`` moves the ticket to the
trash (gone from the list and views: 404; kept in ``trash``, restorable); ``DELETE
/api/v2/contacts/{id}/hard_delete`` deletes a soft-deleted contact for good, or any contact
with ``force=true`` (400 without it), with all their tickets, trashed ones too; 404 for a
contact that is not there. ``forbid_deletes``: every delete answers 403 (``access_denied``)."""

from __future__ import annotations

import base64
import html
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.sinks.conformance import FakeComment, FakeHelpdesk, FakeTicket, WebhookCall
from services.sinks.freshdesk import TOKEN_HEADER

API_KEY, SECRET = "fd-api-key", "fd-webhook-secret"
AGENTS = {"ava": 7001, "bruno": 7002}


def freshdesk_config(api_url: str) -> dict[str, Any]:
    return {"api_url": api_url, "api_key": API_KEY, "webhook_secret": SECRET, "agents": AGENTS}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(body_html: str) -> str:
    return html.unescape(body_html.replace("<br>", "\n"))


class FakeFreshdesk(FakeHelpdesk):
    def __init__(self) -> None:
        super().__init__("Basic " + base64.b64encode(f"{API_KEY}:X".encode()).decode())
        self.contacts: dict[str, int] = {}  # unique_external_id -> contact id
        self.emails: dict[str, int] = {}  # a contact's email -> contact id
        self.times: dict[str, tuple[float, float]] = {}  # ticket id -> (created_at, updated_at)
        self.search_lag = 120.0  # s before a new ticket shows in search results
        self.trash: dict[str, FakeTicket] = {}  # deleted tickets, by id
        self.forbid_deletes = False
        self.forbid_contact_deletes = False  # a role that may delete tickets, not contacts

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/tickets", self._create)
        app.router.add_get("/api/v2/tickets", self._list)
        app.router.add_get("/api/v2/search/tickets", self._search)
        app.router.add_get("/api/v2/tickets/{id}", self._view)
        app.router.add_put("/api/v2/tickets/{id}", self._update)
        app.router.add_post("/api/v2/tickets/{id}/notes", self._note)
        app.router.add_get("/api/v2/tickets/{id}/conversations", self._conversations)
        app.router.add_delete("/api/v2/tickets/{id}", self._delete_ticket)
        app.router.add_delete("/api/v2/contacts/{id}/hard_delete", self._hard_delete_contact)

    def _forbidden(self) -> web.Response:
        return web.json_response({"code": "access_denied", "message": "You are not authorized"}, status=403)

    async def _delete_ticket(self, request: web.Request) -> web.Response:
        if self.forbid_deletes:
            return self._forbidden()
        ticket = self.tickets.pop(request.match_info["id"], None)
        if ticket is None:
            return web.json_response({"code": "access_denied"}, status=404)
        self.trash[ticket.id] = ticket
        return web.Response(status=204)

    async def _hard_delete_contact(self, request: web.Request) -> web.Response:
        if self.forbid_deletes or self.forbid_contact_deletes:
            return self._forbidden()
        contact = int(request.match_info["id"])
        if contact not in self.contacts.values():
            return web.json_response({"code": "access_denied"}, status=404)
        if request.query.get("force") != "true":  # none of ours is soft-deleted first
            error = {"field": "force", "message": "Contact is not deleted", "code": "invalid_value"}
            return web.json_response({"description": "Validation failed", "errors": [error]}, status=400)
        for book in (self.contacts, self.emails):
            for key in [k for k, v in book.items() if v == contact]:
                del book[key]
        for tickets in (self.tickets, self.trash):
            for ticket_id in [i for i, t in tickets.items() if t.requester == str(contact)]:
                del tickets[ticket_id]
        return web.Response(status=204)

    def _json(self, ticket: FakeTicket) -> dict[str, Any]:
        return {
            "id": int(ticket.id),
            "requester_id": int(ticket.requester),
            "responder_id": int(ticket.assignee) if ticket.assignee else None,
            "status": int(ticket.status),
            "tags": ticket.tags,
            "created_at": _iso(self.times.get(ticket.id, (0.0, 0.0))[0]),
            "updated_at": _iso(self.times.get(ticket.id, (0.0, 0.0))[1]),
        }

    def _touch(self, ticket: FakeTicket) -> None:
        created = self.times.get(ticket.id, (time.time(), 0.0))[0]
        self.times[ticket.id] = (created, time.time())

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("unique_external_id") and not body.get("email") and not body.get("phone"):
            return web.json_response({"description": "Validation failed", "errors": []}, status=400)
        if body.get("phone") and not body.get("name"):
            return web.json_response({"description": "Validation failed: name missing"}, status=400)
        requester = self.contacts.setdefault(body["unique_external_id"], int(self.next_id()))
        if body.get("email"):
            self.emails.setdefault(body["email"], requester)
        tags = list(body.get("tags", []))
        conv = next((t[len("rdconv_") :] for t in tags if t.startswith("rdconv_")), "")
        ticket = FakeTicket(
            id=self.next_id(),
            conversation_id=conv,
            requester=str(requester),
            assignee=str(body["responder_id"]) if body.get("responder_id") else None,
            status=str(body.get("status", 2)),
            tags=tags,
        )
        # The description is the ticket's first "comment" for the kit; it is not a conversation entry.
        ticket.comments.append(FakeComment(id="desc", body=_text(body["description"]), author=str(requester)))
        self.tickets[ticket.id] = ticket
        self._touch(ticket)
        return web.json_response(self._json(ticket), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        found = list(self.tickets.values())
        for field, known in (("unique_external_id", self.contacts), ("email", self.emails)):
            if field in query:
                if query[field] not in known:
                    error = {"field": field, "message": f"There is no contact matching the given {field}"}
                    return web.json_response(
                        {"description": "Validation failed", "errors": [{**error, "code": "invalid_value"}]}, status=400
                    )
                found = [t for t in found if t.requester == str(known[query[field]])]
        if "requester_id" in query:
            found = [t for t in found if t.requester == query["requester_id"]]
        if "updated_since" in query:
            since = datetime.fromisoformat(query["updated_since"].replace("Z", "+00:00")).timestamp()
            found = [t for t in found if self.times[t.id][1] >= since]
        else:
            found = [t for t in found if self.times[t.id][0] >= time.time() - 30 * 86400]
        column = {"created_at": 0, "updated_at": 1}[query.get("order_by", "created_at")]
        found.sort(key=lambda t: (self.times[t.id][column], int(t.id)), reverse=query.get("order_type") != "asc")
        page, per_page = int(query.get("page", "1")), min(int(query.get("per_page", "30")), 100)
        return web.json_response([self._json(t) for t in found[(page - 1) * per_page : page * per_page]])

    async def _search(self, request: web.Request) -> web.Response:
        match = re.fullmatch(r"\"tag:'([^']+)'\"", request.query.get("query", ""))
        if match is None:
            return web.json_response({"description": "Invalid query"}, status=400)
        indexed = time.time() - self.search_lag
        found = [
            self._json(t) for t in self.tickets.values() if match.group(1) in t.tags and self.times[t.id][0] <= indexed
        ]
        return web.json_response({"results": found, "total": len(found)})

    async def _view(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"code": "access_denied"}, status=404)
        return web.json_response(self._json(ticket))

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"code": "access_denied"}, status=404)
        body = await request.json()
        if "status" in body:
            ticket.status = str(body["status"])
        if "responder_id" in body:
            ticket.assignee = str(body["responder_id"])
        self._touch(ticket)
        return web.json_response(self._json(ticket))

    async def _note(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"code": "access_denied"}, status=404)
        body = await request.json()
        note = FakeComment(
            id=self.next_id(),
            body=_text(body["body"]),
            author=str(body.get("user_id", "")),
            public=not body.get("private", True),
            staff=not body.get("incoming", False),
        )
        ticket.comments.append(note)
        self._touch(ticket)
        return web.json_response(self._entry(note, source=2), status=201)

    def _entry(self, comment: FakeComment, *, source: int) -> dict[str, Any]:
        return {
            "id": int(comment.id),
            "body": html.escape(comment.body),
            "body_text": comment.body,
            "incoming": not comment.staff,
            "private": not comment.public,
            "user_id": int(comment.author) if comment.author.isdigit() else None,
            "source": source,
        }

    async def _conversations(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"code": "access_denied"}, status=404)
        # Freshdesk pages a ticket's conversations: 30 by default, per_page up to 100, Link: next.
        entries = [self._entry(c, source=0) for c in ticket.comments if c.id != "desc"]
        page = int(request.query.get("page", "1"))
        per_page = min(int(request.query.get("per_page", "30")), 100)
        headers = {}
        if page * per_page < len(entries):
            headers["Link"] = f'<{self.url}{request.path}?page={page + 1}&per_page={per_page}>; rel="next"'
        return web.json_response(entries[(page - 1) * per_page : page * per_page], headers=headers)

    # -- webhooks ------------------------------------------------------------------------------

    def _webhook(self, ticket: FakeTicket, *, secret: str = SECRET) -> WebhookCall:
        body = json.dumps({"ticket_id": int(ticket.id), "status": ticket.status}).encode()
        return WebhookCall("/freshdesk/webhook", body, {"Content-Type": "application/json", TOKEN_HEADER: secret})

    def agent_reply(self, ticket: FakeTicket, text: str) -> WebhookCall:
        ticket.comments.append(FakeComment(id=self.next_id(), body=text, author=str(AGENTS["ava"]), staff=True))
        return self._webhook(ticket)

    def solve(self, ticket: FakeTicket) -> WebhookCall:
        ticket.status = "4"
        return self._webhook(ticket)

    def echo(self, ticket: FakeTicket, comment: FakeComment) -> WebhookCall:
        return self._webhook(ticket)

    def forge(self, call: WebhookCall) -> WebhookCall:
        return WebhookCall(call.path, call.body, {**call.headers, TOKEN_HEADER: "guessed"})

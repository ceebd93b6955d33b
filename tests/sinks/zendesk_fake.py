"""A fake Zendesk built from its documented shapes: Users create_or_update, Tickets (create,
list by external_id, update with a comment; the audit's Comment event carries the comment
id), and the event webhooks "ticket.comment_added" / "ticket.status_changed", signed
base64(HMAC-SHA256(secret, timestamp + body)) in X-Zendesk-Webhook-Signature.

Deletion as Zendesk documents it: ``DELETE /api/v2/tickets/{id}`` soft-deletes (the ticket
leaves every list and view, 404 after), ``DELETE /api/v2/deleted_tickets/{id}`` permanently
deletes a soft-deleted one (a queued job: ``job_status``; 404 for one not soft-deleted);
``DELETE /api/v2/users/{id}`` soft-deletes a user (422 while they request a ticket that is not
closed; ``GET /api/v2/users/{id}`` then shows ``active: false``), ``DELETE
/api/v2/deleted_users/{id}`` permanently deletes a soft-deleted one; ``GET
/api/v2/users/{id}/tickets/requested`` lists a user's tickets (paged). ``forbid_deletes``: every
delete answers 403 (an agent without the right)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.sinks.conformance import FakeComment, FakeHelpdesk, FakeTicket, WebhookCall
from services.sinks.zendesk import COMMENT_ADDED, SIGNATURE, SIGNATURE_TIMESTAMP, STATUS_CHANGED, sign

EMAIL, TOKEN, SECRET = "bot@acme.test", "zd-api-token", "zd-webhook-secret"
AGENTS = {"ava": 9001, "bruno": 9002}


def zendesk_config(api_url: str) -> dict[str, Any]:
    return {"api_url": api_url, "email": EMAIL, "api_token": TOKEN, "webhook_secret": SECRET, "agents": AGENTS}


class FakeZendesk(FakeHelpdesk):
    def __init__(self) -> None:
        super().__init__("Basic " + base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode())
        self.users: dict[str, dict[str, Any]] = {}  # by external_id
        self.created_with_key: list[str] = []
        self.deleted_tickets: dict[str, FakeTicket] = {}  # soft-deleted, by id
        self.forbid_deletes = False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/users/create_or_update.json", self._user)
        app.router.add_get("/api/v2/tickets.json", self._list)
        app.router.add_post("/api/v2/tickets.json", self._create)
        app.router.add_put("/api/v2/tickets/{id}.json", self._update)
        app.router.add_get("/api/v2/tickets/{id}/comments.json", self._comments)
        app.router.add_delete("/api/v2/tickets/{id}.json", self._delete_ticket)
        app.router.add_delete("/api/v2/deleted_tickets/{id}.json", self._purge_ticket)
        app.router.add_get("/api/v2/users/{id}.json", self._show_user)
        app.router.add_get("/api/v2/users/{id}/tickets/requested.json", self._requested)
        app.router.add_delete("/api/v2/users/{id}.json", self._delete_user)
        app.router.add_delete("/api/v2/deleted_users/{id}.json", self._purge_user)

    # -- deletion -----------------------------------------------------------------------------

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if str(u["id"]) == user_id), None)

    def _forbidden(self) -> web.Response:
        return web.json_response({"error": "Forbidden", "description": "You do not have access"}, status=403)

    def _not_found(self) -> web.Response:
        return web.json_response({"error": "RecordNotFound", "description": "Not found"}, status=404)

    async def _delete_ticket(self, request: web.Request) -> web.Response:
        if self.forbid_deletes:
            return self._forbidden()
        ticket = self.tickets.pop(request.match_info["id"], None)
        if ticket is None:
            return self._not_found()
        self.deleted_tickets[ticket.id] = ticket
        return web.Response(status=204)

    async def _purge_ticket(self, request: web.Request) -> web.Response:
        if self.forbid_deletes:
            return self._forbidden()
        if self.deleted_tickets.pop(request.match_info["id"], None) is None:
            return self._not_found()
        job = {"id": uuid.uuid4().hex, "job_type": "ticket_deletion", "status": "queued", "url": None}
        return web.json_response({"job_status": job})

    async def _show_user(self, request: web.Request) -> web.Response:
        user = self.user_by_id(request.match_info["id"])
        return web.json_response({"user": user}) if user is not None else self._not_found()

    async def _requested(self, request: web.Request) -> web.Response:
        user_id = request.match_info["id"]
        if self.user_by_id(user_id) is None:
            return self._not_found()
        found = [self._ticket_json(t) for t in self.tickets.values() if t.requester == user_id]
        page, per_page = int(request.query.get("page", "1")), min(int(request.query.get("per_page", "100")), 100)
        chunk = found[(page - 1) * per_page : page * per_page]
        more = f"{self.url}{request.path}?page={page + 1}&per_page={per_page}" if page * per_page < len(found) else None
        return web.json_response({"tickets": chunk, "next_page": more, "count": len(found)})

    async def _delete_user(self, request: web.Request) -> web.Response:
        if self.forbid_deletes:
            return self._forbidden()
        user = self.user_by_id(request.match_info["id"])
        if user is None or not user.get("active", True):
            return self._not_found()
        if any(t.requester == str(user["id"]) and t.status != "closed" for t in self.tickets.values()):
            error = {"error": "RecordInvalid", "description": "Requester of tickets that are not closed"}
            return web.json_response(error, status=422)
        user["active"] = False
        return web.json_response({"user": user})

    async def _purge_user(self, request: web.Request) -> web.Response:
        if self.forbid_deletes:
            return self._forbidden()
        user = self.user_by_id(request.match_info["id"])
        if user is None or user.get("active", True):  # only a soft-deleted user
            return self._not_found()
        del self.users[user["external_id"]]
        return web.json_response({"deleted_user": {**user, "email": None, "phone": None}})

    async def _user(self, request: web.Request) -> web.Response:
        user = (await request.json())["user"]
        known = self.users.get(user["external_id"])
        if known is None:
            known = self.users[user["external_id"]] = {
                **user,
                "id": int(self.next_id()),
                "role": "end-user",
                "active": True,
            }
            return web.json_response({"user": known}, status=201)
        known.update(user)
        return web.json_response({"user": known})

    def _ticket_json(self, ticket: FakeTicket) -> dict[str, Any]:
        return {
            "id": int(ticket.id),
            "external_id": ticket.conversation_id,
            "requester_id": int(ticket.requester),
            "assignee_id": int(ticket.assignee) if ticket.assignee else None,
            "status": ticket.status,
            "tags": ticket.tags,
        }

    async def _list(self, request: web.Request) -> web.Response:
        wanted = request.query.get("external_id")
        found = [self._ticket_json(t) for t in self.tickets.values() if t.conversation_id == wanted]
        return web.json_response({"tickets": found, "count": len(found), "next_page": None})

    async def _comments(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"error": "RecordNotFound"}, status=404)
        found = [
            {
                "id": int(c.id),
                "body": c.body,
                "author_id": int(c.author) if c.author.isdigit() else None,
                "public": c.public,
            }
            for c in ticket.comments
        ]
        if request.query.get("sort_order") == "desc":
            found.reverse()
        return web.json_response({"comments": found, "next_page": None, "count": len(found)})

    def _audit(self, ticket: FakeTicket, comment: dict[str, Any] | None) -> dict[str, Any]:
        events = []
        if comment is not None:
            made = FakeComment(
                id=self.next_id(),
                body=comment["body"],
                author=str(comment.get("author_id") or "bot"),
                public=comment.get("public", True),
                staff=str(comment.get("author_id")) in {str(v) for v in AGENTS.values()} or "author_id" not in comment,
            )
            ticket.comments.append(made)
            events.append({"id": int(made.id), "type": "Comment", "body": made.body, "public": made.public})
        return {"id": int(self.next_id()), "ticket_id": int(ticket.id), "events": events}

    async def _create(self, request: web.Request) -> web.Response:
        body = (await request.json())["ticket"]
        self.created_with_key.append(request.headers.get("Idempotency-Key", ""))
        ticket = FakeTicket(
            id=self.next_id(),
            conversation_id=body.get("external_id", ""),
            requester=str(body["requester_id"]),
            assignee=str(body["assignee_id"]) if body.get("assignee_id") else None,
            status="new" if not body.get("assignee_id") else "open",
            tags=list(body.get("tags", [])),
        )
        self.tickets[ticket.id] = ticket
        audit = self._audit(ticket, body.get("comment"))
        return web.json_response({"ticket": self._ticket_json(ticket), "audit": audit}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(request.match_info["id"])
        if ticket is None:
            return web.json_response({"error": "RecordNotFound"}, status=404)
        body = (await request.json())["ticket"]
        if ticket.status == "closed":
            return web.json_response({"error": "RecordInvalid", "description": "closed"}, status=422)
        if "assignee_id" in body:
            ticket.assignee = str(body["assignee_id"])
        if "status" in body:
            ticket.status = body["status"]
        audit = self._audit(ticket, body.get("comment"))
        return web.json_response({"ticket": self._ticket_json(ticket), "audit": audit})

    # -- webhooks ----------------------------------------------------------------------------

    def _webhook(self, ticket: FakeTicket, kind: str, event: dict[str, Any], *, secret: str = SECRET) -> WebhookCall:
        payload = {
            "account_id": 21825834,
            "detail": {
                "id": ticket.id,
                "external_id": ticket.conversation_id,
                "requester_id": ticket.requester,
                "assignee_id": ticket.assignee,
                "status": ticket.status.upper(),
                "tags": ticket.tags,
            },
            "event": event,
            "id": str(uuid.uuid4()),
            "subject": f"zen:ticket:{ticket.id}",
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "type": kind,
            "zendesk_event_version": "2022-11-06",
        }
        body = json.dumps(payload).encode()
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE: sign(secret, timestamp, body),
            SIGNATURE_TIMESTAMP: timestamp,
        }
        return WebhookCall("/zendesk/webhook", body, headers)

    def _comment_event(self, comment: FakeComment) -> dict[str, Any]:
        return {
            "comment": {
                "id": comment.id,
                "body": comment.body,
                "is_public": comment.public,
                "author": {"id": comment.author, "is_staff": comment.staff, "name": "someone"},
            }
        }

    def agent_reply(self, ticket: FakeTicket, text: str) -> WebhookCall:
        comment = FakeComment(id=self.next_id(), body=text, author=str(AGENTS["ava"]), public=True, staff=True)
        ticket.comments.append(comment)
        return self._webhook(ticket, COMMENT_ADDED, self._comment_event(comment))

    def solve(self, ticket: FakeTicket) -> WebhookCall:
        previous, ticket.status = ticket.status, "solved"
        return self._webhook(ticket, STATUS_CHANGED, {"current": "SOLVED", "previous": previous.upper()})

    def echo(self, ticket: FakeTicket, comment: FakeComment) -> WebhookCall:
        return self._webhook(ticket, COMMENT_ADDED, self._comment_event(comment))

    def forge(self, call: WebhookCall) -> WebhookCall:
        timestamp = call.headers[SIGNATURE_TIMESTAMP]
        return WebhookCall(
            call.path, call.body, {**call.headers, SIGNATURE: sign("not-the-secret", timestamp, call.body)}
        )

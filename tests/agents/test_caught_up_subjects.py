"""What a command waits for: a conversation the view knows is read on its own subject, not
looked for under every customer (``rd.evt.c.*.<id>``, which the server answers by walking every
customer's subjects: found by a security audit, the cost of each accept and reply on a log of
millions of customers)."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from services.api.caught_up import subject_of


def test_a_known_conversation_is_its_own_subject_and_an_unknown_one_a_filter() -> None:
    accept = make_mocked_request("POST", "/v1/conversations/cv1/accept", match_info={"id": "cv1"})
    assert subject_of(accept, lambda cid: "cu1" if cid == "cv1" else None) == "rd.evt.c.cu1.cv1"
    assert subject_of(accept, lambda cid: None) == "rd.evt.c.*.cv1"  # opened through another API a moment ago?
    read = make_mocked_request("GET", "/v1/conversations/cv1", match_info={"id": "cv1"})
    assert subject_of(read, lambda cid: "cu1") is None  # reads do not wait

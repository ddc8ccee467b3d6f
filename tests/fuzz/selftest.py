"""The fuzz check must be able to fail: feed it responses that break the
contract and see each one caught, and good responses pass.

Run: python tests/fuzz/selftest.py (from the repository root, in the fuzz venv).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import graphql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from herald_checks import Violation, check_response  # noqa: E402

SCHEMA = graphql.build_schema((Path(__file__).resolve().parents[2] / "schema.graphql").read_text())
QUERY = "{ notifications(page: 1, pageSize: 2) { totalCount items { id status createdAt sentAt recipient { __typename email } } } }"
GOOD_ITEM = {
    "id": "7",
    "status": "SENT",
    "createdAt": "2026-11-27T03:00:00.123Z",
    "sentAt": None,
    "recipient": {"__typename": "User", "email": "a@example.com"},
}


def case(query: str = QUERY):
    operation = SimpleNamespace(schema=SimpleNamespace(client_schema=SCHEMA), label="Query.notifications")
    return SimpleNamespace(body=query, operation=operation)


def response(body, status: int = 200):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return SimpleNamespace(status_code=status, content=content, text=content.decode())


def page(*items, total=1):
    return {"data": {"notifications": {"totalCount": total, "items": list(items)}}}


def item(**changes):
    return {**GOOD_ITEM, **changes}


EVENTS = "{ inboxChanges(after: 0) { events { seq ... on NotificationsMarked { upTo } } } }"


def events(*items):
    return {"data": {"inboxChanges": {"events": list(items)}}}


def error(code, message="no", **extensions):
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}], "data": None}


GOOD = [
    ("a page", case(), response(page(item()))),
    ("an aliased, fragment-spread query", case(
        "query { n: notifications { ...P } } fragment P on NotificationPage { totalCount }"),
        response({"data": {"n": {"totalCount": 0}}})),
    ("a contract error", case(), response(error("BAD_USER_INPUT", "pageSize must be between 1 and 100"))),
    ("a rate limit", case(), response(error("RATE_LIMITED", retryAfter=3))),
    ("a 413 shaped as GraphQL", case(), response(error("BAD_USER_INPUT"), 413)),
    ("an interface value of either type", case(EVENTS),
        response(events({"seq": 1}, {"seq": 2, "upTo": 1}))),
    ("a fragment matching no field of the event", case("{ inboxChanges(after: 0) { events { ... on InboxResync { seq } } } }"),
        response(events({}))),
    ("a send's data, any JSON, and its category", case(
        "{ notifications { items { category data } } }"),
        response({"data": {"notifications": {"items": [
            {"category": "billing", "data": {"a": [1, None, {"b": "c"}]}}, {"category": None, "data": None}]}}})),
    ("the request's own text echoed", case('{ notification(id: "src/x.rs") { id } }'),
        response(error("BAD_USER_INPUT", "src/x.rs"))),
]

BAD = [
    ("HTTP 500", case(), response(page(item()), 500)),
    ("an HTML body", case(), response("<html>oops</html>")),
    ("an unknown top-level key", case(), response({**page(item()), "trace": 1})),
    ("INTERNAL", case(), response(error("INTERNAL", "internal error"))),
    ("an error without a code", case(), response({"errors": [{"message": "x"}], "data": None})),
    ("a code outside the contract", case(), response(error("NOT_FOUND"))),
    ("RATE_LIMITED without retryAfter", case(), response(error("RATE_LIMITED"))),
    ("SQL in an error", case(), response(error("BAD_USER_INPUT", "duplicate key value violates unique constraint"))),
    ("a panic in an error", case(), response(error("BAD_USER_INPUT", "thread 'x' panicked at src/main.rs:1:1"))),
    ("a Rust path in an error", case(), response(error("BAD_USER_INPUT", "sea_orm::error::DbErr"))),
    ("null for a non-null field", case(), response(page(item(status=None)))),
    ("a status outside the enum", case(), response(page(item(status="DELIVERED")))),
    ("an Int as a string", case(), response(page(item(), total="1"))),
    ("an Int beyond 32 bits", case(), response(page(item(), total=2**31))),
    ("an ID as a number", case(), response(page(item(id=7)))),
    ("a DateTime without a zone", case(), response(page(item(createdAt="2026-11-27T03:00:00")))),
    ("a field nobody asked for", case(), response(page(item(title="t")))),
    ("a selected field missing", case(), response(page({k: v for k, v in GOOD_ITEM.items() if k != "sentAt"}))),
    ("a wrong __typename", case(), response(page(item(recipient={"__typename": "Admin", "email": "a@b.c"})))),
    ("a list that is an object", case(), response({"data": {"notifications": {"totalCount": 1, "items": {}}}})),
    ("null for a non-null interface item", case(EVENTS), response(events(None))),
    ("an interface value that fits no type", case(EVENTS), response(events({"seq": 1, "title": "x"}))),
    ("a __typename outside the interface", case("{ inboxChanges(after: 0) { events { __typename } } }"),
        response(events({"__typename": "User"}))),
    ("null for an event of which nothing is selected",
        case("{ inboxChanges(after: 0) { events { ... on InboxResync { seq } } } }"), response(events(None))),
    ("null data without errors", case(), response({"data": None})),
    ("a category that is not a string", case("{ notifications { items { category } } }"),
        response({"data": {"notifications": {"items": [{"category": 7}]}}})),
]


def main() -> int:
    failed = 0
    for name, c, r in GOOD:
        try:
            check_response(r, c)
            print(f"ok   passes: {name}")
        except Violation as exc:
            failed += 1
            print(f"FAIL flagged: {name}: {exc}")
    for name, c, r in BAD:
        try:
            check_response(r, c)
            failed += 1
            print(f"FAIL missed: {name}")
        except Violation as exc:
            print(f"ok   caught: {name} ({str(exc)[:80]})")
    print(f"herald_checks self-test: {len(GOOD) + len(BAD) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

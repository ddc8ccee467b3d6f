"""Herald's contract, as a schemathesis check (loaded through SCHEMATHESIS_HOOKS).

schemathesis's own GraphQL checks judge errors by Apollo's codes: a
`wrong email or password` (UNAUTHENTICATED) counts as a server error to them
and a too-long title refused with BAD_USER_INPUT as a rejected valid input,
although GraphQL has no way to state either rule in the schema. This check
holds Herald to its own contract instead (../shared/contract.graphql):

- no HTTP 5xx, and every body is a GraphQL response (a JSON object with
  `data` and/or `errors` and nothing else);
- every error has a message and an `extensions.code` from the contract, and
  none is INTERNAL; RATE_LIMITED carries a positive `retryAfter`;
- `data` matches the schema for the query that was sent: every selected key
  present and no other, non-null fields never null, scalars and enums of
  their declared type (Int within 32 bits, ID a string, DateTime RFC 3339);
- no error carries SQL, a file path, a Rust type name or a panic message
  (the patterns of tests/leaks.txt, shared with the Rust tests), unless the
  text was in the request itself.

It also gives the generator Herald's two custom scalars, which dictionaries
cannot fill (they hold String, ID, Int and Float values only): `DateTime`
mostly near the moment of the request (a `sendAt` or `expiresAt` is only
accepted from 5 s ago to 90 days ahead), and `JSON` mostly as an object
(`data` must be one, of at most 8 KiB), sometimes too big or not an object.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import graphql
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# The contract's codes, and the one automatic persisted queries add.
CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_USER_INPUT",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL",
    "PERSISTED_QUERY_NOT_FOUND",
}
LEAKS = [
    re.compile(line)
    for line in (Path(__file__).resolve().parent.parent / "leaks.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class Violation(AssertionError):
    pass


def _scalar_ok(type_name: str, value: Any) -> bool:
    if type_name == "Int":
        return isinstance(value, int) and not isinstance(value, bool) and INT_MIN <= value <= INT_MAX
    if type_name == "Float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "Boolean":
        return isinstance(value, bool)
    if type_name in ("String", "ID"):
        return isinstance(value, str)
    if type_name == "JSON":
        # Any JSON value (a send's `data` comes back as it was given).
        return True
    if type_name == "DateTime":
        if not isinstance(value, str):
            return False
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        return parsed.tzinfo is not None
    raise Violation(f"the schema has a scalar this check does not know: {type_name}")


def _now_plus(seconds: int) -> graphql.StringValueNode:
    """RFC 3339 for `seconds` from now, taken when the request is built."""
    at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return nodes.String(at.isoformat().replace("+00:00", "Z"))


DAY = 86_400
# Offsets around the bounds of sendAt and expiresAt: just past, now, the
# scheduling threshold (1 s), hours and days ahead, 90 days and over.
OFFSETS = [-3_600, -10, -3, 0, 2, 30, 600, 3_600, DAY, 89 * DAY, 91 * DAY, 400 * DAY]
DATETIMES = st.one_of(
    st.sampled_from(OFFSETS).map(_now_plus),
    st.integers(min_value=-10, max_value=100 * DAY).map(_now_plus),
    st.sampled_from(["2020-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a date", ""]).map(nodes.String),
)

# JSON values as GraphQL literals; object keys are GraphQL names.
_KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)
_LEAVES = st.one_of(
    st.just(nodes.Null),
    st.booleans().map(nodes.Boolean),
    st.integers(min_value=-(2**53), max_value=2**53).map(nodes.Int),
    st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    st.text(max_size=40).map(nodes.String),
)


def _object(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(_KEYS, values, max_size=6).map(
        lambda d: nodes.Object([graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v) for k, v in d.items()])
    )


_VALUES = st.recursive(_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4).map(nodes.List), _object(inner)), max_leaves=12)
JSON_VALUES = st.one_of(
    _object(_VALUES),
    _object(_VALUES),
    _object(_VALUES),
    # Over 8 KiB.
    st.integers(min_value=8_180, max_value=9_000).map(
        lambda n: nodes.Object([graphql.ObjectFieldNode(name=graphql.NameNode(value="big"), value=nodes.String("a" * n))])
    ),
    _VALUES,
)
schemathesis.graphql.scalar("DateTime", DATETIMES)
schemathesis.graphql.scalar("JSON", JSON_VALUES)

# A recipient is exactly one of userId, email and externalId (email may come
# with externalId). The generator sets every optional field it can, so
# without help a recipient always names all three (BAD_USER_INPUT). These
# are the subsets a draw may keep: each valid shape, and the generated one.
RECIPIENT_SHAPES = [{"userId"}, {"email"}, {"externalId"}, {"externalId", "email"}, None]


def _keep(items: tuple, names: set[str] | None) -> tuple:
    return tuple(items) if names is None else tuple(i for i in items if i.name.value not in RECIPIENT_FIELDS or i.name.value in names)


RECIPIENT_FIELDS = {"userId", "email", "externalId"}


def _cut_recipient(field: graphql.FieldNode, names: set[str] | None) -> graphql.FieldNode:
    """issueUserToken's arguments, or sendNotification's `input.to`, kept to `names`."""
    if field.name.value == "issueUserToken":
        return replace(field, arguments=_keep(field.arguments, names))
    if field.name.value != "sendNotification":
        return field

    def to(f: graphql.ObjectFieldNode) -> graphql.ObjectFieldNode:
        if f.name.value == "to" and isinstance(f.value, graphql.ObjectValueNode):
            return replace(f, value=replace(f.value, fields=_keep(f.value.fields, names)))
        return f

    def arg(a: graphql.ArgumentNode) -> graphql.ArgumentNode:
        if a.name.value == "input" and isinstance(a.value, graphql.ObjectValueNode):
            return replace(a, value=replace(a.value, fields=tuple(to(f) for f in a.value.fields)))
        return a

    return replace(field, arguments=tuple(arg(a) for a in field.arguments))


def _recipient_variants(document: graphql.DocumentNode) -> list[graphql.DocumentNode]:
    """`document` with its recipient cut down to each of RECIPIENT_SHAPES."""
    variants = []
    for names in RECIPIENT_SHAPES:
        definitions = []
        for definition in document.definitions:
            if isinstance(definition, graphql.OperationDefinitionNode):
                selections = tuple(
                    _cut_recipient(f, names) if isinstance(f, graphql.FieldNode) else f
                    for f in definition.selection_set.selections
                )
                definition = replace(definition, selection_set=replace(definition.selection_set, selections=selections))
            definitions.append(definition)
        variants.append(replace(document, definitions=tuple(definitions)))
    return variants


@schemathesis.hook
def flatmap_body(context, body):
    if isinstance(body, graphql.DocumentNode):
        return st.sampled_from(_recipient_variants(body))
    return st.just(body)


class ResponseShape:
    """Walks a query document beside the `data` it produced."""

    def __init__(self, schema: graphql.GraphQLSchema, document: graphql.DocumentNode):
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)
        }
        self.operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]

    def check(self, data: Any) -> None:
        if data is None:
            return
        if len(self.operations) != 1:
            raise Violation("data for a document without exactly one operation")
        op = self.operations[0]
        root = {
            graphql.OperationType.QUERY: self.schema.query_type,
            graphql.OperationType.MUTATION: self.schema.mutation_type,
        }.get(op.operation)
        if root is None:
            raise Violation(f"data for a {op.operation.value} operation over HTTP")
        self.object(root, op.selection_set, data, "data")

    def _included(self, node: Any) -> bool:
        for directive in node.directives or ():
            arg = next((a for a in directive.arguments if a.name.value == "if"), None)
            if arg is None or not isinstance(arg.value, graphql.BooleanValueNode):
                continue
            if directive.name.value == "skip" and arg.value.value:
                return False
            if directive.name.value == "include" and not arg.value.value:
                return False
        return True

    def _fields(self, parent: graphql.GraphQLObjectType, selection_set: Any, out: dict[str, list]) -> None:
        for sel in selection_set.selections:
            if not self._included(sel):
                continue
            if isinstance(sel, graphql.FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                out.setdefault(key, []).append(sel)
            else:
                if isinstance(sel, graphql.FragmentSpreadNode):
                    fragment = self.fragments[sel.name.value]
                    condition, inner = fragment.type_condition, fragment.selection_set
                else:
                    condition, inner = sel.type_condition, sel.selection_set
                if condition is None or self._applies(condition.name.value, parent):
                    self._fields(parent, inner, out)

    def _applies(self, condition: str, parent: graphql.GraphQLObjectType) -> bool:
        """Whether a fragment on `condition` applies to an object of `parent`'s
        type: the type itself, or an interface or union it belongs to."""
        if condition == parent.name:
            return True
        named = self.schema.get_type(condition)
        if isinstance(named, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType)):
            return parent in self.schema.get_possible_types(named)
        return False

    def object(self, parent: graphql.GraphQLObjectType, selection_set: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise Violation(f"{path}: expected an object {parent.name}, got {value!r}")
        fields: dict[str, list] = {}
        self._fields(parent, selection_set, fields)
        if set(value) != set(fields):
            raise Violation(f"{path}: keys {sorted(value)} but the query selected {sorted(fields)}")
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                if value[key] != parent.name:
                    raise Violation(f"{path}.{key}: {value[key]!r} is not {parent.name}")
                continue
            field = parent.fields.get(name)
            if field is None:
                raise Violation(f"{path}.{key}: {parent.name} has no field {name}")
            merged = [s for n in nodes if n.selection_set for s in n.selection_set.selections]
            selection = graphql.SelectionSetNode(selections=tuple(merged)) if merged else None
            self.value(field.type, selection, value[key], f"{path}.{key}")

    def abstract(self, type_: Any, selection: Any, value: Any, path: str) -> None:
        """An interface or union value: an object of one of its possible types
        (the one whose selected fields are the value's keys)."""
        problems = []
        for possible in self.schema.get_possible_types(type_):
            try:
                self.object(possible, selection, value, path)
                return
            except Violation as exc:
                problems.append(str(exc))
        raise Violation(f"{path}: no {type_.name} type fits: {'; '.join(problems)}")

    def value(self, type_: Any, selection: Any, value: Any, path: str) -> None:
        if isinstance(type_, graphql.GraphQLNonNull):
            if value is None:
                raise Violation(f"{path}: null for the non-null {type_}")
            type_ = type_.of_type
        if value is None:
            return
        if isinstance(type_, graphql.GraphQLList):
            if not isinstance(value, list):
                raise Violation(f"{path}: expected a list, got {value!r}")
            for i, item in enumerate(value):
                self.value(type_.of_type, selection, item, f"{path}[{i}]")
        elif isinstance(type_, graphql.GraphQLEnumType):
            if value not in type_.values:
                raise Violation(f"{path}: {value!r} is not a {type_.name}")
        elif isinstance(type_, graphql.GraphQLScalarType):
            if not _scalar_ok(type_.name, value):
                raise Violation(f"{path}: {value!r} is not a valid {type_.name}")
        elif isinstance(type_, graphql.GraphQLObjectType):
            self.object(type_, selection, value, path)
        elif isinstance(type_, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType)):
            self.abstract(type_, selection, value, path)
        else:
            raise Violation(f"{path}: a type this check does not know: {type_}")


def _leak(text: str, request: str) -> str | None:
    for pattern in LEAKS:
        for match in pattern.finditer(text):
            if match.group(0) not in request:
                return f"{match.group(0)!r} (pattern {pattern.pattern!r})"
    return None


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def check_response(response, case) -> tuple[str, str]:
    """Raises Violation when `response` breaks the contract; returns its outcome
    ("data", or the error code) and the error message, for the summary."""
    status = response.status_code
    if status >= 500:
        raise Violation(f"HTTP {status}: {response.text[:500]}")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise Violation(f"HTTP {status} with a body that is not JSON ({exc}): {response.text[:500]}") from None
    if not isinstance(body, dict) or not body.keys() <= {"data", "errors", "extensions"} or not body:
        raise Violation(f"not a GraphQL response: {response.text[:500]}")
    request = case.body if isinstance(case.body, str) else json.dumps(case.body)

    for error in body.get("errors") or []:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise Violation(f"an error without a message: {error!r}")
        code = (error.get("extensions") or {}).get("code")
        if code not in CODES:
            raise Violation(f"an error without a contract code: {error!r}")
        if code == "INTERNAL":
            raise Violation(f"INTERNAL error: {error!r}")
        if code == "RATE_LIMITED":
            retry = error["extensions"].get("retryAfter")
            if not isinstance(retry, int) or retry <= 0:
                raise Violation(f"RATE_LIMITED without a positive retryAfter: {error!r}")
        for text in _strings(error):
            found = _leak(text, request)
            if found:
                raise Violation(f"an error leaks internals: {found} in {error!r}")
    if "errors" in body and not body["errors"]:
        raise Violation("an empty `errors` list")
    if "data" not in body and not body.get("errors"):
        raise Violation("neither data nor errors")

    if body.get("data") is not None:
        if status != 200:
            raise Violation(f"data with HTTP {status}")
        try:
            document = graphql.parse(request)
        except graphql.GraphQLError as exc:
            raise Violation(f"data for a query that does not parse ({exc.message})") from None
        ResponseShape(case.operation.schema.client_schema, document).check(body["data"])
        if not body.get("errors"):
            return "data", ""
    if not body.get("errors"):
        raise Violation("`data` is null and there are no errors")
    first = body["errors"][0]
    return first["extensions"]["code"], first["message"]


@schemathesis.check
class herald_contract:  # noqa: N801 (the check's name in the CLI)
    """Herald's GraphQL contract: no 5xx, contract error codes, data that matches the schema, no leaks.

    After the run it prints what each operation answered, and with
    HERALD_FUZZ_REQUIRE_DATA=1 fails unless every operation returned data at
    least once (an authenticated run that only ever saw errors tested nothing).
    """

    def __init__(self):
        # Each request's distinct outcomes, so shrinking and replays do not
        # count twice.
        self.outcomes: dict[str, dict[str, set[tuple[str, str]]]] = {}

    def after_response(self, ctx, response, case):
        outcome = check_response(response, case)
        self.outcomes.setdefault(case.operation.label, {}).setdefault(repr(case.body), set()).add(outcome)

    def after_run(self, ctx):
        lines = ["herald_contract: what each operation answered (one message per code)"]
        for label, seen in sorted(self.outcomes.items()):
            by_code: dict[str, list[str]] = {}
            for outcomes in seen.values():
                for code, message in sorted(outcomes):
                    by_code.setdefault(code, []).append(message)
            lines.append(f"  {label}: {len(seen)} distinct requests")
            for code, messages in sorted(by_code.items(), key=lambda kv: -len(kv[1])):
                example = f": {messages[0][:100]!r}" if messages[0] else ""
                lines.append(f"    {code} {len(messages)}{example}")
        print("\n".join(lines), flush=True)
        if os.environ.get("HERALD_FUZZ_REQUIRE_DATA") == "1":
            # Operations this run cannot expect data from (space-separated
            # labels, e.g. an application's operation under a user's token).
            exempt = set(os.environ.get("HERALD_FUZZ_DATA_EXEMPT", "").split())
            starved = [
                label
                for label, seen in self.outcomes.items()
                if label not in exempt
                and not any(code == "data" for outcomes in seen.values() for code, _ in outcomes)
            ]
            if starved:
                raise Violation("never returned data: " + ", ".join(sorted(starved)))

#!/usr/bin/env python3
"""The PromQL queries of Herald's Grafana dashboard, and the metric names in them.

    dashboard_queries.py exprs DASHBOARD.json            every query, Grafana's variables filled in
    dashboard_queries.py rules DASHBOARD.json            the same as a Prometheus rule file, for `promtool check rules`
    dashboard_queries.py check DASHBOARD.json SCRAPE.txt  every metric a query names is in the scrape

`check` reads a scrape of a running Herald's /metrics (Prometheus text format
0.0.4) and fails, naming each one, when a query names a metric that is not
exported, or groups or filters by a label that the metric's series do not
carry. A histogram `x` is exported as `x_bucket`, `x_sum` and `x_count`; a
counter as `x_total` (the text format names its family so). A family the
scrape declares (`# TYPE`) without a series yet counts as exported, by those
rules.

Standard library only: CI runs it on a fresh machine. render_dashboard.py
uses the same functions, so the picture shows exactly these queries.
"""

import json
import re
import sys

# Grafana's built-in interval variables, and the dashboard's own ones: what
# they stand for when a query runs outside Grafana.
RANGE_VARIABLES = ("$__rate_interval", "$__interval", "$__range")

# Words of PromQL that are not metric names where they stand bare.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2",
}
# Keywords followed by a parenthesised list of label names.
LABEL_LISTS = ("by", "without", "on", "ignoring", "group_left", "group_right")
# Labels Prometheus attaches to every scraped series (or that histograms have).
TARGET_LABELS = {"instance", "job", "le"}

TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>\d[\w.]*)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def panels(dashboard):
    """Every panel, rows' nested panels included, in the dashboard's order."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def fill(expr, range_interval="1m", variables=None):
    """`expr` with Grafana's variables replaced: interval variables by
    `range_interval`, `$name` / `${name}` by `variables[name]` (default: the
    variable's "all" value, `.+`)."""
    for name in RANGE_VARIABLES:
        expr = expr.replace(name, range_interval)
    variables = variables or {}
    return re.sub(
        r"\$\{(\w+)(?::\w+)?\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), ".+"),
        expr,
    )


def queries(dashboard):
    """(where, expr) for every PromQL query: panel targets and the query
    variables (`label_values(selector, label)` gives its selector)."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") != "query" or not query:
            continue
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.DOTALL)
        found.append((f"variable {variable.get('name')!r}", m.group(1) if m else query))
    return found


def tokens(expr):
    for m in TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind != "space":
            yield kind, m.group()


def parse(expr):
    """The metric names an expression selects, and the label names it groups
    or matches by: ({metric}, {label})."""
    toks = list(tokens(expr))
    metrics, labels = set(), set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LISTS and following == "(":
            j = i + 2
            while j < len(toks) and toks[j][1] != ")":
                if toks[j][0] == "ident":
                    labels.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if text == "{":
            j = i + 1
            while j < len(toks) and toks[j][1] != "}":
                if toks[j][0] == "ident" and j + 1 < len(toks) and toks[j + 1][1] in ("=", "!"):
                    if toks[j][1] == "__name__" and j + 2 < len(toks):
                        value = toks[j + 2] if toks[j + 2][0] == "string" else toks[j + 3]
                        metrics.add(value[1][1:-1])
                    else:
                        labels.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if text == "[":
            while i < len(toks) and toks[i][1] != "]":
                i += 1
            i += 1
            continue
        # A function's or an aggregation's name is followed by its
        # arguments or by its grouping (`sum by (x) (…)`); a metric never.
        if kind == "ident" and following not in ("(", "by", "without") and text.lower() not in KEYWORDS:
            metrics.add(text)
        i += 1
    return metrics, labels


def exposition(text):
    """{name: set of label names} for every name a scrape exports."""
    exported = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names = [name + s for s in ("_bucket", "_sum", "_count")] if kind == "histogram" else [name]
            for n in names:
                exported.setdefault(n, set())
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s", line)
            if m:
                names = set(re.findall(r'([A-Za-z_]\w*)="', m.group(2) or ""))
                exported.setdefault(m.group(1), set()).update(names)
    return exported


def check(dashboard, scrape):
    exported = exposition(scrape)
    problems, used = [], set()
    found = queries(dashboard)
    if not found:
        problems.append("the dashboard has no queries")
    for where, expr in found:
        metrics, labels = parse(fill(expr))
        if not metrics:
            problems.append(f"{where}: names no metric: {expr}")
        used |= metrics
        for metric in sorted(metrics - exported.keys()):
            problems.append(f"{where}: {metric} is not exported by Herald")
        known = set().union(*(exported.get(m, set()) for m in metrics)) if metrics else set()
        # Labels can only be judged against series that exist.
        if any(exported.get(m) for m in metrics):
            for label in sorted(labels - known - TARGET_LABELS):
                problems.append(f"{where}: no series of {', '.join(sorted(metrics))} has the label {label!r}")
    return used, problems


def main(argv):
    if len(argv) == 3 and argv[1] == "exprs":
        for where, expr in queries(load(argv[2])):
            print(f"{where}\t{fill(expr)}")
        return 0
    if len(argv) == 3 and argv[1] == "rules":
        rules = [
            {"record": f"dashboard:query_{n}", "expr": fill(expr)}
            for n, (_, expr) in enumerate(queries(load(argv[2])), 1)
        ]
        print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
        return 0
    if len(argv) == 4 and argv[1] == "check":
        with open(argv[3], encoding="utf-8") as f:
            used, problems = check(load(argv[2]), f.read())
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"{argv[2]}: {len(used)} metrics, every one exported: {', '.join(sorted(used))}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

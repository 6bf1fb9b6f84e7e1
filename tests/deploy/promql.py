"""Just enough PromQL and exposition-format reading to check names across files.

Not a PromQL parser: it removes what cannot be a metric name (string literals, label matchers,
range selectors, grouping clauses, function calls, keywords, numbers) and returns the
identifiers that are left, which in PromQL can only be metric names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")  # {endpoint="generate", status=~"5.."}
_RANGE = re.compile(r"\[[^\[\]]*\]")  # [5m], [$__rate_interval], [1h:5m]
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
# An identifier not glued to a preceding word, digit, dot or Grafana '$' variable, taken whole,
# and not followed by '(' (which would make it a function or aggregation).
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])(?!\s*\()")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects, e.g. {"facegen_requests_total"}."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


# The series names a family of each type puts on the wire (client_python, text format 0.0.4).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "untyped": ("",),
}


def exposed_series(metrics_text: str) -> dict[str, str]:
    """Map every series name a /metrics page can contain to its family, from its # TYPE lines.

    A labelled family with no child yet still has its # TYPE line, so this is the full set the
    service declares, not only those that have seen traffic.
    """
    series: dict[str, str] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        base = name.removesuffix("_total") if kind == "counter" else name
        for suffix in _SUFFIXES.get(kind, ("",)):
            series[base + suffix] = base
        series.setdefault(name, base)
    return series


def unknown_names(exprs: Iterable[str], known: Iterable[str]) -> dict[str, set[str]]:
    """{expression: names it uses that are not in `known`}, only for expressions with some."""
    known_set = set(known)
    out = {}
    for expr in exprs:
        missing = metric_names(expr) - known_set
        if missing:
            out[expr] = missing
    return out

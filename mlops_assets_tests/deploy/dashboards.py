"""The Grafana dashboards' PromQL as plain queries that Prometheus (or promtool) can run.

Grafana is not needed to test a dashboard's data: each panel's target holds a PromQL
expression with Grafana variables in it. :func:`panel_queries` reads every dashboard of a
folder and substitutes those variables, so a test can run the expressions against a real
Prometheus (the HTTP API's ``/api/v1/query``) or check them with ``promtool``::

    from mlops_assets_tests.deploy.dashboards import panel_queries

    for query in panel_queries(interval="5s"):
        result = prometheus.query(query.expr)            # however the test asks Prometheus
        assert result, f"{query.where}: no data for {query.expr}"

Substitution: ``$__rate_interval``, ``$__interval`` and ``$__range`` (also as ``${...}``)
become ``interval``; every variable the dashboard declares in ``templating`` becomes
``variables[name]`` if given, else ``.*`` (the dashboards use their variables only in
regex matchers, ``label=~"$name"``, so ``.*`` means "all", as Grafana's *All* does). A
variable the dashboard does not declare raises :class:`DashboardError` naming the dashboard
and the panel. ``$datasource`` appears only in datasource fields, never in an expression.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "observability" / "dashboards"
# Grafana's interval variables: each one a duration, which a test sets to its scrape rhythm.
INTERVALS = ("__rate_interval", "__interval", "__range")
# $name, ${name}, ${name:format}, [[name]]
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
# Names in PromQL that are neither metrics nor functions.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}


class DashboardError(ValueError):
    """A dashboard that cannot be turned into queries (the message names where)."""


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, its expression ready for Prometheus.

    Attributes:
        dashboard: The dashboard's ``uid`` (stable across imports).
        dashboard_title: The dashboard's title.
        file: The dashboard's file name.
        panel: The panel's title.
        ref_id: The target's ``refId`` (``A``, ``B``...).
        expr: The expression with every variable substituted: plain PromQL.
        raw: The expression as written in the dashboard.
        instant: True for an instant query (tables), False for a range query (graphs).
    """

    dashboard: str
    dashboard_title: str
    file: str
    panel: str
    ref_id: str
    expr: str
    raw: str
    instant: bool

    @property
    def where(self) -> str:
        """``dashboard 'uid' panel 'title' (refId A)``, for messages."""
        return f"dashboard {self.dashboard!r} panel {self.panel!r} (refId {self.ref_id})"


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` of ``folder`` by file name, parsed (invalid JSON raises, naming it)."""
    boards = {}
    for path in sorted(folder.glob("*.json")):
        try:
            boards[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DashboardError(f"{path.name}: invalid JSON: {error}") from error
    return boards


def panels(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside collapsed rows included, rows themselves not."""
    found = []
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def declared_variables(board: Mapping[str, Any]) -> list[str]:
    return [variable["name"] for variable in board.get("templating", {}).get("list", [])]


def substitute(
    expr: str,
    declared: list[str],
    *,
    interval: str = "1m",
    variables: Mapping[str, str] | None = None,
    where: str = "",
) -> str:
    """``expr`` with Grafana's variables replaced (see the module's docstring)."""
    given = dict(variables or {})

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in INTERVALS:
            return interval
        if name in declared:
            return given.get(name, ".*")
        raise DashboardError(f"{where}: variable ${name} is not declared in the dashboard")

    return VARIABLE.sub(value, expr)


def panel_queries(
    folder: Path = DASHBOARDS,
    *,
    interval: str = "1m",
    variables: Mapping[str, str] | None = None,
    dashboards: Iterable[str] | None = None,
) -> list[PanelQuery]:
    """Every target of every panel of the dashboards in ``folder``, as plain PromQL.

    Args:
        folder: The folder of dashboard JSON files (default: deploy/observability/dashboards).
        interval: What ``$__rate_interval``, ``$__interval`` and ``$__range`` become, a
            PromQL duration such as ``"1m"``; a range window should span at least two
            scrapes, so with a 1 s scrape interval ``"5s"`` shows data after a few seconds.
        variables: Values of the dashboards' own variables by name (a regex each, e.g.
            ``{"model_version": "2"}``); a variable not given becomes ``.*``.
        dashboards: Only the dashboards with these uids (``mlops-serving``,
            ``mlops-model-health``, ``mlops-data-quality``); all when None.

    Returns:
        One :class:`PanelQuery` per target, in file and panel order.

    Raises:
        DashboardError: invalid JSON, a panel without targets or with an empty expression,
            or a variable the dashboard does not declare; the message names the dashboard
            and the panel.
    """
    wanted = None if dashboards is None else set(dashboards)
    queries = []
    for file, board in load_dashboards(folder).items():
        uid = board.get("uid", file)
        if wanted is not None and uid not in wanted:
            continue
        declared = declared_variables(board)
        for panel in panels(board):
            title = panel.get("title", f"id {panel.get('id')}")
            targets = panel.get("targets") or []
            if not targets:
                raise DashboardError(f"dashboard {uid!r} panel {title!r}: no targets")
            for target in targets:
                ref_id = target.get("refId", "?")
                where = f"dashboard {uid!r} panel {title!r} (refId {ref_id})"
                raw = (target.get("expr") or "").strip()
                if not raw:
                    raise DashboardError(f"{where}: no expression")
                queries.append(
                    PanelQuery(
                        dashboard=uid,
                        dashboard_title=board.get("title", ""),
                        file=file,
                        panel=title,
                        ref_id=ref_id,
                        expr=substitute(
                            raw, declared, interval=interval, variables=variables, where=where
                        ),
                        raw=raw,
                        instant=bool(target.get("instant")) and not target.get("range"),
                    )
                )
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (recording rule names included).

    A PromQL reading of names only: strings, label matchers, grouping clauses, durations and
    numbers are removed, and what remains is a metric unless a function call or a keyword.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:offset\s+-?|@\s*)[0-9a-z.]+(?:\(\))?", " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0).lower() in KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def variable_query_metrics(board: Mapping[str, Any]) -> set[str]:
    """The metrics the dashboard's query variables read (``label_values(metric, label)``)."""
    names = set()
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
        if not match:
            raise DashboardError(f"{board.get('uid')}: variable {variable['name']}: {text!r}")
        names |= metric_names(match.group(1))
    return names


def rule_name(index: int) -> str:
    return f"dashboard_query_{index}"


def promtool_problems(
    queries: list[PanelQuery], promtool: str, folder: Path, timeout: float = 60
) -> list[str]:
    """Checks every query with ``promtool check rules``; one message per broken query.

    Each expression becomes a recording rule of a temporary rule file in ``folder``, so
    promtool's own PromQL parser judges it; its complaints are returned with the rule's
    name replaced by the dashboard, panel and refId of the query.
    """
    by_name = {rule_name(i): query for i, query in enumerate(queries)}
    rules = [{"record": name, "expr": query.expr} for name, query in by_name.items()]
    path = folder / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode == 0:
        return []
    problems = []
    for line in (done.stdout + done.stderr).splitlines():
        match = re.search(r'"(dashboard_query_\d+)": (.*)', line)
        if match:
            query = by_name[match.group(1)]
            problems.append(f"{query.where}: {match.group(2)} in {query.expr!r}")
    return problems or [done.stdout + done.stderr]

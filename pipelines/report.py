"""The compliance report (``lethe report``): one self-contained HTML file for an auditor.

What was kept, pseudonymised and purged (per table and reason, and per run over time),
quarantine reasons, consent rates and undocumented consents, erasure requests against
the SLA, the result of every proof ``lethe verify`` runs, the audit chain's verification,
and the policy and contract versions that decided.

The file opens offline: no scripts, no external URLs (a Content-Security-Policy forbids
loading anything), plots are inline SVG drawn by matplotlib's Agg/SVG renderer with
text as paths (no font is fetched) and a fixed ``svg.hashsalt`` and no date metadata, so
the same warehouse and ``generated_at`` give the same bytes.

No personal data, ever: the report shows counts, table names, reasons, purposes, source
systems, run ids and versions — no tokens, no request ids. Every string read from the
warehouse is HTML-escaped, and the finished HTML is refused if it holds anything that
looks like an email address.
"""

from __future__ import annotations

import html
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from pipelines.summary import (
    NOT_BUILT,
    _relation_exists,
    consent_quality,
    decision_reasons,
    quarantine_reasons,
    table_summaries,
)

REPORT_NAME = "compliance-report.html"
ACTIONS = ("keep", "pseudonymise", "purge")
ACTION_COLOURS = {"keep": "#59a14f", "pseudonymise": "#f28e2b", "purge": "#e15759",
                  "erasure_complete": "#4e79a7"}
# Art. 12(3): a request is answered within one month of receipt.
ONE_MONTH = timedelta(days=30)
_EMAIL_LIKE = re.compile(r"[^\s@<>()\[\],;:\"'=]+@[^\s@<>()\[\],;:\"'=]+\.[A-Za-z]{2,}")
_DEFAULT_MIRROR = object()


class ReportError(RuntimeError):
    """The warehouse cannot be reported on (missing, or no Lethe table in it)."""


# --------------------------------------------------------------------------- data


@dataclass
class ProofResult:
    name: str
    description: str
    offending: int | None  # None: not run
    note: str = ""

    @property
    def status(self) -> str:
        if self.offending is None:
            return "NOT RUN"
        return "ok" if self.offending == 0 else "FAILED"


@dataclass
class ReportData:
    generated_at: datetime
    run_id: str | None
    as_of: datetime | None
    policy_version_run: str | None
    policy_version_file: str | None
    policy_rows: list[tuple] = field(default_factory=list)
    contracts: list[tuple[str, str, str, str]] = field(default_factory=list)
    tables: list = field(default_factory=list)  # summary.TableSummary
    decisions: list[tuple[str, str, str, int]] = field(default_factory=list)
    has_decisions: bool = False
    has_audit: bool = False
    enforced: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, action) -> rows
    enforced_reasons: list[tuple[str, str, str, int]] = field(default_factory=list)
    other_actions: list[tuple[str, str, int, int]] = field(default_factory=list)
    runs: list[tuple[str, datetime, int, int, int]] = field(default_factory=list)
    dry_run_entries: int = 0
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)
    has_consent: bool = False
    consent_rates: list[tuple[str, str, int, int]] = field(default_factory=list)
    consent_over_time: list[tuple[str, str, object, int]] = field(default_factory=list)
    undocumented: list[tuple[str, int, str]] | None = field(default_factory=list)  # None: not built
    undocumented_by_purpose: list[tuple[str, int]] = field(default_factory=list)
    conflicts: int | None = 0  # None: not built
    has_erasure: bool = False
    erasure_outcomes: list[tuple[str, int]] = field(default_factory=list)
    erasure_completed: list[tuple[float | None, float | None]] = field(default_factory=list)
    erasure_open_hours: list[float] = field(default_factory=list)
    erasure_overdue: int = 0
    sla_hours: float = 72.0
    proofs: list[ProofResult] = field(default_factory=list)
    proofs_note: str = ""
    audit_rows: int = 0
    audit_problems: list[str] | None = None
    audit_mirror_checked: bool = False


def _one(con, sql: str, params: list | None = None):
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def _run_context(con) -> tuple[str | None, datetime | None, str | None]:
    if not _relation_exists(con, "policy", "run_context"):
        return None, None, None
    row = _one(con, "SELECT run_id, as_of, policy_version FROM policy.run_context")
    return (row[0], row[1], row[2]) if row else (None, None, None)


def _policy_and_contracts(con, data: ReportData, contracts) -> None:
    from pipelines.policy import PolicyError, load_policy

    try:
        data.policy_version_file = load_policy().version
    except PolicyError as exc:
        data.policy_version_file = f"unreadable ({exc})"
    data.contracts = [(c.contract_id, c.version, c.qualified_table, ", ".join(c.purposes))
                      for c in contracts]
    if _relation_exists(con, "policy", "retention_policy"):
        data.policy_rows = con.execute(
            """SELECT table_name, purpose, legal_basis, coalesce(consent_purpose, ''),
                      coalesce(retention, ''), on_expiry,
                      coalesce(minimisation_window || ' → ' || on_minimisation, '')
               FROM policy.retention_policy ORDER BY table_name"""
        ).fetchall()


def _audit_facts(con, data: ReportData) -> None:
    """What enforcement did, from the audit log: totals per table/action (all runs,
    applied only — dry runs changed nothing) and per run over time."""
    data.has_audit = _relation_exists(con, "audit", "audit_log")
    if not data.has_audit:
        return
    data.audit_rows = _one(con, "SELECT count(*) FROM audit.audit_log")[0]
    data.dry_run_entries = _one(con, "SELECT count(*) FROM audit.audit_log WHERE dry_run")[0]
    data.enforced = {
        (table, action): int(n) for table, action, n in con.execute(
            """SELECT table_name, action, sum(rows_affected) FROM audit.audit_log
               WHERE NOT dry_run AND action IN ('purge', 'pseudonymise') GROUP BY ALL"""
        ).fetchall()
    }
    data.enforced_reasons = [
        (t, a, r, int(n)) for t, a, r, n in con.execute(
            """SELECT table_name, action, reason, sum(rows_affected) FROM audit.audit_log
               WHERE NOT dry_run AND action IN ('purge', 'pseudonymise') GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    ]
    data.other_actions = [
        (a, t, int(entries), int(n)) for a, t, entries, n in con.execute(
            """SELECT action, table_name, count(*), sum(rows_affected) FROM audit.audit_log
               WHERE NOT dry_run AND action NOT IN ('purge', 'pseudonymise') GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    ]
    # a run's time is its first entry's logged_at (the run's clock: its as-of)
    data.runs = [
        (run, first, int(purged), int(pseudonymised), int(erasures)) for run, first, purged, pseudonymised, erasures
        in con.execute(
            """SELECT coalesce(run_id, '(no run id)'), min(logged_at),
                      coalesce(sum(rows_affected) FILTER (WHERE action = 'purge'), 0),
                      coalesce(sum(rows_affected) FILTER (WHERE action = 'pseudonymise'), 0),
                      count(*) FILTER (WHERE action = 'erasure_complete')
               FROM audit.audit_log WHERE NOT dry_run GROUP BY 1 ORDER BY 2, 1"""
        ).fetchall()
    ]


def _consent_facts(con, data: ReportData) -> None:
    """Consent rate per purpose and key type at the run's as-of: keys whose consent is
    valid now / keys with any recorded choice for that purpose. Purposes the policy
    requires consent for appear even when nobody has recorded a choice."""
    data.has_consent = _relation_exists(con, "consent", "consent_state") and \
        _relation_exists(con, "consent", "consent_ledger")
    if data.has_consent:
        data.consent_rates = consent_rates(con)
    policy_purposes: set[str] = set()
    if _relation_exists(con, "policy", "retention_policy"):
        policy_purposes = {r[0] for r in con.execute(
            "SELECT DISTINCT consent_purpose FROM policy.retention_policy "
            "WHERE consent_purpose IS NOT NULL AND consent_purpose <> 'any'"
        ).fetchall()}
    seen = {purpose for purpose, *_ in data.consent_rates}
    data.consent_rates += [(p, "email", 0, 0) for p in sorted(policy_purposes - seen)]
    data.consent_rates.sort()
    if _relation_exists(con, "marts", "consent_summary"):
        # month ends (and the last day) keep the plot small: ~12 points a year per line
        data.consent_over_time = con.execute(
            """SELECT purpose, key_type, day, active_consents FROM marts.consent_summary
               QUALIFY row_number() OVER (
                   PARTITION BY purpose, key_type, date_trunc('month', day) ORDER BY day DESC) = 1
               ORDER BY purpose, key_type, day"""
        ).fetchall()
    data.undocumented, data.conflicts = consent_quality(con)
    if _relation_exists(con, "consent", "undocumented_consents"):
        data.undocumented_by_purpose = [(p, int(n)) for p, n in con.execute(
            "SELECT purpose, sum(undocumented_grants) FROM consent.undocumented_consents GROUP BY 1 ORDER BY 1"
        ).fetchall()]


def consent_rates(con) -> list[tuple[str, str, int, int]]:
    """(purpose, key type, keys with valid consent at as-of, keys with a recorded choice)."""
    as_of = "(SELECT max(as_of) FROM policy.run_context)" if _relation_exists(con, "policy", "run_context") \
        else "current_timestamp::TIMESTAMP"
    return [(p, k, int(v), int(n)) for p, k, v, n in con.execute(
        f"""WITH recorded AS (
                SELECT purpose, key_type, count(DISTINCT key_value) AS keys
                FROM consent.consent_ledger WHERE occurred_at <= {as_of} GROUP BY ALL
            ), valid AS (
                SELECT purpose, key_type, count(DISTINCT key_value) AS keys
                FROM consent.consent_state
                WHERE valid_from <= {as_of} AND (valid_to IS NULL OR valid_to > {as_of})
                GROUP BY ALL
            )
            SELECT recorded.purpose, recorded.key_type, coalesce(valid.keys, 0), recorded.keys
            FROM recorded LEFT JOIN valid USING (purpose, key_type)
            ORDER BY 1, 2"""
    ).fetchall()]


def _erasure_facts(con, data: ReportData, now: datetime) -> None:
    from pipelines.enforce.erasure import overdue_requests, sla_hours

    data.sla_hours = sla_hours()
    data.has_erasure = _relation_exists(con, "retention", "erasure_request_outcomes")
    if not data.has_erasure:
        return
    data.erasure_outcomes = [(o, int(n)) for o, n in con.execute(
        "SELECT outcome, count(*) FROM retention.erasure_request_outcomes GROUP BY 1 ORDER BY 1"
    ).fetchall()]
    if _relation_exists(con, "erasure", "erasure_log"):
        # hours from verification (the SLA clock) and from receipt to completion
        data.erasure_completed = con.execute(
            """SELECT epoch(completed_at - verified_at) / 3600.0, epoch(completed_at - received_at) / 3600.0
               FROM erasure.erasure_log ORDER BY 1 NULLS LAST, 2"""
        ).fetchall()
        naive_now = now.astimezone(timezone.utc).replace(tzinfo=None)
        data.erasure_open_hours = [r[0] for r in con.execute(
            """SELECT epoch(?::TIMESTAMP - o.verified_at) / 3600.0 FROM retention.erasure_request_outcomes AS o
               WHERE o.outcome = 'erasure_due' AND o.verified_at IS NOT NULL
                 AND o.request_id NOT IN (SELECT request_id FROM erasure.erasure_log) ORDER BY 1""",
            [naive_now],
        ).fetchall()]
        data.erasure_overdue = len(overdue_requests(con, now))


def _proofs(con, data: ReportData, now: datetime) -> None:
    """The proofs ``lethe verify`` and enforcement run, recomputed now (counts only)."""
    from pipelines.enforce.proof import compute_proofs
    from pipelines.pseudonym import MissingKeyError
    from pipelines.sql_functions import install_sql_functions
    from pipelines.suppression_counts import SuppressionCounts

    if not _relation_exists(con, "retention", "retention_decisions"):
        data.proofs_note = "No retention decisions in this warehouse yet: the proofs need a complete `lethe run`."
        return
    try:
        install_sql_functions(con)
        # read-only: the erased-subject counts enforcement kept for tables unchanged since
        proofs = compute_proofs(con, now, SuppressionCounts(con))
    except MissingKeyError as exc:
        data.proofs_note = f"Proofs not run: {exc}"
        return
    except (duckdb.Error, RuntimeError) as exc:
        # the error's type only: a database error can quote a value it choked on
        data.proofs_note = (f"Proofs not run: {type(exc).__name__} (run `lethe verify` for the details)")
        return
    data.proofs = [ProofResult(p.name, p.description, p.offending, p.note) for p in proofs]


def _audit_chain(con, data: ReportData, audit_mirror: Path | None) -> None:
    from pipelines.audit import verify_audit_log

    data.audit_mirror_checked = audit_mirror is not None
    data.audit_problems = verify_audit_log(con, audit_mirror) if data.has_audit else None


def collect(con: duckdb.DuckDBPyConnection, *, audit_mirror: Path | None, generated_at: datetime) -> ReportData:
    """Every fact the report shows, read from the warehouse (set-based, read-only)."""
    from pipelines.contracts import load_contracts
    from pipelines.ingest.tables import INGEST_LOG_TABLE

    known = [(s, t) for s, t in (("policy", "run_context"), ("audit", "audit_log"),
                                  tuple(INGEST_LOG_TABLE.split(".")), ("retention", "retention_decisions"))
             if _relation_exists(con, s, t)]
    if not known:
        raise ReportError(
            "this warehouse holds no Lethe data yet (no ingest log, run context, decisions or audit log): "
            "run `lethe run` first"
        )
    run_id, as_of, version = _run_context(con)
    data = ReportData(generated_at=generated_at, run_id=run_id, as_of=as_of,
                      policy_version_run=version, policy_version_file=None)
    contracts = load_contracts()  # validated against the ODCS schema: slow, so once
    _policy_and_contracts(con, data, contracts)
    if _relation_exists(con, *INGEST_LOG_TABLE.split(".")):
        data.tables = table_summaries(con, contracts, run_id)
    data.has_decisions = _relation_exists(con, "retention", "retention_decisions")
    data.decisions = decision_reasons(con, run_id)
    data.quarantine = quarantine_reasons(con)
    _audit_facts(con, data)
    _consent_facts(con, data)
    _erasure_facts(con, data, generated_at)
    _proofs(con, data, generated_at)
    _audit_chain(con, data, audit_mirror)
    return data


# --------------------------------------------------------------------------- plots


def _svg(fig, name: str) -> str:
    """The figure as inline SVG: no XML prolog, no date, ids prefixed so several SVGs can
    share one HTML document, text drawn as paths (no fonts needed)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"lethe-report-{name}", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
                    bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    prefix = f"{name}-"
    text = re.sub(r'( id="|href="#|url\(#)', lambda m: m.group(1) + prefix, text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)}" ', 1)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def plot_decisions_by_table(tables) -> str:
    rows = [t for t in tables if t.kept is not None]
    fig, ax = _figure(8, 0.45 * max(len(rows), 1) + 1.4)
    names = [t.table for t in rows]
    left = [0] * len(rows)
    for action, values in (("keep", [t.kept for t in rows]), ("pseudonymise", [t.pseudonymised for t in rows]),
                           ("purge", [t.purged for t in rows])):
        ax.barh(names, values, left=left, label=action, color=ACTION_COLOURS[action])
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.set_title("Decisions per table")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(len(rows), 1)), ncol=3, fontsize=8, frameon=False)
    return _svg(fig, "decisions-by-table")


def runs_by_day(runs):
    """Many runs (a sensor starts one per erasure request file): one bar per day instead."""
    days: dict = {}
    for _run, first, purged, pseudonymised, erasures in runs:
        day = first.date()
        _, _, p, s, e = days.get(day, (None, None, 0, 0, 0))
        days[day] = (f"{day} (day)", datetime.combine(day, datetime.min.time()), p + purged, s + pseudonymised,
                     e + erasures)
    return [days[d] for d in sorted(days)]


def plot_enforcement_over_time(runs) -> str:
    if len(runs) > MAX_BARS:
        runs = runs_by_day(runs)[-MAX_BARS:]
    fig, ax = _figure(8, 3.2)
    labels = [f"{first:%Y-%m-%d %H:%M}\n{run[:8]}" for run, first, *_ in runs]
    xs = list(range(len(runs)))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [r[2] for r in runs], width, label="rows purged", color=ACTION_COLOURS["purge"])
    ax.bar([x + width / 2 for x in xs], [r[3] for r in runs], width, label="rows pseudonymised",
           color=ACTION_COLOURS["pseudonymise"])
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_xlim(-0.8, max(len(runs) - 0.2, 1.2))
    ax.set_ylabel("rows")
    ax.set_title("Enforcement per run (audit log; run time and id)")
    ax.legend(fontsize=8)
    return _svg(fig, "enforcement-over-time")


def plot_consent_over_time(points) -> str:
    fig, ax = _figure(8, 3.4)
    series: dict[tuple[str, str], tuple[list, list]] = {}
    for purpose, key_type, day, active in points:
        xs, ys = series.setdefault((purpose, key_type), ([], []))
        xs.append(day)
        ys.append(active)
    for (purpose, key_type), (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 3 else None, markersize=4,
                linestyle="-" if key_type == "email" else "--", label=f"{purpose} ({key_type})")
    ax.set_ylabel("active consents")
    ax.set_title("Active consents over time (month ends; marts.consent_summary)")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return _svg(fig, "consent-over-time")


def plot_consent_rates(rates) -> str:
    shown = [r for r in rates if r[3]]
    fig, ax = _figure(8, 0.4 * len(shown) + 1.3)
    ax.barh([f"{p} ({k})" for p, k, _, _ in shown], [100 * v / n for _, _, v, n in shown], color="#4e79a7")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of keys with a recorded choice whose consent is valid at as-of")
    ax.set_title("Consent rate per purpose")
    return _svg(fig, "consent-rates")


MAX_BARS = 40  # beyond this many requests or runs a plot shows a distribution / days, not one bar each


def plot_erasure_times(completed, sla: float) -> str:
    hours = [h for h, _ in completed if h is not None]
    if len(hours) > MAX_BARS:  # thousands of requests: a histogram, not one bar each
        fig, ax = _figure(8, 3.2)
        ax.hist(hours, bins=30, color=ACTION_COLOURS["keep"])
        ax.axvline(sla, color="#333333", linestyle="--", label=f"SLA {sla:g} h")
        ax.set_xlabel("hours from verification to completion")
        ax.set_ylabel("requests")
        ax.set_title(f"Time to complete {len(hours):,} erasure requests against the SLA")
        ax.legend(fontsize=8)
        return _svg(fig, "erasure-time-to-complete")
    fig, ax = _figure(8, 0.3 * len(hours) + 1.4)
    ys = list(range(1, len(hours) + 1))
    colours = [ACTION_COLOURS["keep"] if h <= sla else ACTION_COLOURS["purge"] for h in hours]
    ax.barh(ys, hours, color=colours)
    ax.axvline(sla, color="#333333", linestyle="--", label=f"SLA {sla:g} h")
    ax.set_yticks(ys, [f"#{y}" for y in ys], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("hours from verification to completion")
    ax.set_title("Completed erasure requests against the SLA (sorted; no request ids)")
    ax.legend(fontsize=8)
    return _svg(fig, "erasure-time-to-complete")


# --------------------------------------------------------------------------- HTML


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _table(headers: list[str], rows: list[list], *, id_: str | None = None, numeric_from: int = 1,
           cell_attrs=None) -> str:
    """A table; cells are escaped. ``cell_attrs(row, column) -> dict`` adds data attributes."""
    out = [f'<table{f" id={chr(34)}{esc(id_)}{chr(34)}" if id_ else ""}><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, value in enumerate(row):
            attrs = cell_attrs(row, i) if cell_attrs else {}
            attr_text = "".join(f' {esc(k)}="{esc(v)}"' for k, v in attrs.items())
            cls = ' class="num"' if i >= numeric_from and not isinstance(value, str) else ""
            text = _num(value) if isinstance(value, (int, float)) or value is None else esc(value)
            out.append(f"<td{cls}{attr_text}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _plot(name: str, svg: str, caption: str) -> str:
    return f'<figure class="plot" data-plot="{esc(name)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def _empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def _status(ok: bool | None, text: str) -> str:
    cls = {True: "ok", False: "fail", None: "warn"}[ok]
    return f'<span class="status {cls}">{esc(text)}</span>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1000px;color:#222;line-height:1.4;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:600;padding:.1em .5em;border-radius:3px}
.ok{background:#e3f4e1;color:#1d5e17}.fail{background:#fbe3e3;color:#9b1c1c}.warn{background:#fff4d6;color:#7a5200}
.empty{color:#666;font-style:italic}.meta td:first-child{font-weight:600}
figure.plot{margin:1em 0}figure.plot svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
ul.problems{font-family:ui-monospace,monospace;font-size:.85em}
"""


def _header(d: ReportData) -> str:
    as_of = f"{d.as_of:%Y-%m-%d %H:%M:%S} UTC" if d.as_of else "no run yet"
    version_note = ""
    if d.policy_version_run and d.policy_version_file and d.policy_version_run != d.policy_version_file:
        version_note = " (the policy file has changed since this run: the next run applies it)"
    rows = [
        ["Generated", f"{d.generated_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"],
        ["Run id (latest)", d.run_id or "no run yet"],
        ["As of", as_of],
        ["Policy version (latest run)", d.policy_version_run or "–"],
        ["Policy version (file now)", (d.policy_version_file or "–") + version_note],
    ]
    return _table(["", ""], rows, numeric_from=99).replace("<table>", '<table class="meta">', 1)


def _overview(d: ReportData) -> str:
    failed = [p for p in d.proofs if p.status == "FAILED"]
    items = []
    if d.proofs:
        items.append(_status(not failed, f"{len(d.proofs) - len(failed)} of {len(d.proofs)} proofs hold"))
    else:
        items.append(_status(None, "proofs not run"))
    if d.audit_problems is None:
        items.append(_status(None, "no audit log yet"))
    elif d.audit_problems:
        items.append(_status(False, f"audit chain FAILED ({len(d.audit_problems)} problems)"))
    else:
        items.append(_status(True, "audit chain intact" + ("" if d.audit_mirror_checked else " (mirror not compared)")))
    late = sum(1 for h, _ in d.erasure_completed if h is not None and h > d.sla_hours)
    if d.erasure_overdue:
        items.append(_status(False, f"{d.erasure_overdue} erasure request(s) open past the SLA"))
    if late:
        items.append(_status(None, f"{late} erasure(s) completed after the SLA"))
    return "<p>" + " ".join(items) + "</p>"


def _retention_section(d: ReportData) -> str:
    out = ["<h2 id=\"section-retention\">Kept, pseudonymised and purged</h2>"]
    if d.tables:
        out.append("<h3>Per table</h3>")
        out.append("<p>Ingestion counts from the ingest log; kept and pseudonymised are the current decisions "
                   "(retention.retention_decisions); purged is what the latest run deleted (audit log) plus rows "
                   "still decided purge.</p>")
        out.append(_table(
            ["table", "files", "rows read", "ingested", "quarantined", "rows now", "kept", "pseudonymised", "purged"],
            [[t.table, t.files, t.rows_read, t.ingested, t.quarantined, t.rows_now, t.kept, t.pseudonymised, t.purged]
             for t in d.tables], id_="tables"))
        if d.has_decisions:
            out.append(_plot("decisions-by-table", plot_decisions_by_table(d.tables),
                             "Records per table and decision (purge: rows the latest run purged plus rows "
                             "still decided purge)."))
    else:
        out.append(_empty("Nothing ingested yet."))
    if not d.has_decisions:
        out.append(_empty("No retention decisions yet: the dbt models have not been built (run `lethe run`)."))
    elif d.decisions:
        out.append("<h3>By action and reason</h3>")
        out.append(_table(["table", "action", "reason", "records"], [list(r) for r in d.decisions],
                          id_="decisions", numeric_from=3))

    out.append("<h3>Enforced, all runs (audit log)</h3>")
    if not d.has_audit:
        out.append(_empty("No audit log yet: enforcement has not run."))
        return "".join(out)
    tables = sorted({t for t, _ in d.enforced})
    if tables:
        out.append(_table(
            ["table", "rows purged", "rows pseudonymised"],
            [[t, d.enforced.get((t, "purge"), 0), d.enforced.get((t, "pseudonymise"), 0)] for t in tables],
            id_="enforced-by-table",
            cell_attrs=lambda row, i: {"data-table": row[0], "data-action": ("", "purge", "pseudonymise")[i]} if i else {},
        ))
        out.append(_table(["table", "action", "reason", "rows"], [list(r) for r in d.enforced_reasons],
                          id_="enforced-by-reason", numeric_from=3))
    else:
        out.append(_empty("Enforcement has purged and pseudonymised nothing yet."))
    if d.other_actions:
        out.append("<p>Other enforcement actions recorded:</p>")
        out.append(_table(["action", "target", "entries", "rows affected"], [list(r) for r in d.other_actions],
                          id_="other-actions", numeric_from=2))
    if d.dry_run_entries:
        out.append(f"<p>{d.dry_run_entries:,} dry-run audit entries (what would have changed) are not counted.</p>")
    out.append("<h3>Over time</h3>")
    if d.runs:
        shown = d.runs[-MAX_BARS:]
        if len(d.runs) > len(shown):
            out.append(f"<p>The latest {len(shown)} of {len(d.runs):,} runs (the totals above count all; "
                       "the chart shows days).</p>")
        out.append(_table(["run id", "first entry (UTC)", "rows purged", "rows pseudonymised", "erasures completed"],
                          [[r, f"{first:%Y-%m-%d %H:%M:%S}", p, s, e] for r, first, p, s, e in shown],
                          id_="runs", numeric_from=2))
        note = " Only one run so far: the chart has one point in time." if len(d.runs) == 1 else ""
        out.append(_plot("enforcement-over-time", plot_enforcement_over_time(d.runs),
                         "Rows purged and pseudonymised per enforcement run." + note))
    else:
        out.append(_empty("No enforcement run recorded yet."))
    return "".join(out)


def _quarantine_section(d: ReportData) -> str:
    out = ["<h2 id=\"section-quarantine\">Quarantine</h2>"]
    if d.quarantine:
        total = sum(n for *_, n in d.quarantine)
        out.append(f"<p>{total:,} rows held in ingest.quarantine (not loaded), by table and reason.</p>")
        out.append(_table(["table", "reason", "rows"], [list(r) for r in d.quarantine], id_="quarantine",
                          numeric_from=2))
    else:
        out.append(_empty("No quarantined rows."))
    return "".join(out)


def _consent_section(d: ReportData) -> str:
    out = ["<h2 id=\"section-consent\">Consent</h2>"]
    if not d.has_consent:
        out.append(_empty("No consent models yet (run `lethe run`)."))
        return "".join(out)
    out.append("<p>Rate: keys (emails or cookie ids) whose consent for the purpose is valid at the run's as-of, "
               "out of the keys with any recorded choice for it. An undocumented grant is not consent.</p>")
    rows = [[p, k, v, n, (f"{100 * v / n:.1f} %" if n else "no consent events yet")]
            for p, k, v, n in d.consent_rates]
    if rows:
        out.append(_table(["purpose", "key type", "valid consents", "keys with a recorded choice", "rate"], rows,
                          id_="consent-rates", numeric_from=2,
                          cell_attrs=lambda row, i: {"data-purpose": row[0], "data-key-type": row[1]} if i == 2 else {}))
        if any(n for *_, n in d.consent_rates):
            out.append(_plot("consent-rates", plot_consent_rates(d.consent_rates), "Consent rate per purpose."))
    else:
        out.append(_empty("No consent events yet."))
    if d.undocumented is None:
        out.append(f"<h3>Undocumented consents</h3><p>Not known: {esc(NOT_BUILT)}.</p>")
    else:
        total = sum(n for _, n, _ in d.undocumented)
        out.append(f"<h3>Undocumented consents</h3><p>{total:,} grants lack an entry point, notice version or "
                   "evidence and do not count as consent.</p>")
    if d.undocumented:
        out.append(_table(["source system", "undocumented grants", "missing"], [list(r) for r in d.undocumented],
                          id_="undocumented", numeric_from=1))
        out.append(_table(["purpose", "undocumented grants"], [list(r) for r in d.undocumented_by_purpose],
                          id_="undocumented-by-purpose"))
    conflicts = esc(NOT_BUILT) if d.conflicts is None else f"{d.conflicts:,}"
    out.append(f"<p>Subjects/purposes where source systems disagree (the latest documented event decides): "
               f"{conflicts}.</p>")
    if d.consent_over_time:
        out.append(_plot("consent-over-time", plot_consent_over_time(d.consent_over_time),
                         "Active consents per purpose and key type, at each month's end."))
    return "".join(out)


def _hours(value: float) -> str:
    return f"{value:,.1f} h" if value < 48 else f"{value / 24:,.1f} days"


def _erasure_section(d: ReportData) -> str:
    out = [f"<h2 id=\"section-erasure\">Erasure requests</h2><p>SLA: {d.sla_hours:g} hours from verification "
           "(LETHE_ERASURE_SLA_HOURS, default 72); GDPR Art. 12(3): one month from receipt.</p>"]
    if not d.has_erasure:
        out.append(_empty("No erasure models yet (run `lethe run`)."))
        return "".join(out)
    if not d.erasure_outcomes:
        out.append(_empty("No erasure requests yet."))
        return "".join(out)
    out.append(_table(["outcome", "requests"], [list(r) for r in d.erasure_outcomes], id_="erasure-outcomes"))
    hours = [h for h, _ in d.erasure_completed if h is not None]
    if d.erasure_completed:
        within = sum(1 for h in hours if h <= d.sla_hours)
        month = sum(1 for _, r in d.erasure_completed if r is not None and r <= ONE_MONTH.total_seconds() / 3600)
        ordered = sorted(hours)
        median = ordered[len(ordered) // 2] if ordered else None
        rows = [["completed", len(d.erasure_completed)],
                [f"within the SLA ({d.sla_hours:g} h from verification)", within],
                ["within one month of receipt", month]]
        out.append(_table(["completed requests", "count"], rows, id_="erasure-sla"))
        if ordered:
            out.append(f"<p>Time to complete from verification: median {_hours(median)}, "
                       f"longest {_hours(ordered[-1])}.</p>")
            out.append(_plot("erasure-time-to-complete", plot_erasure_times(d.erasure_completed, d.sla_hours),
                             "Hours from verification to completion per completed request; dashed line: SLA."))
    else:
        out.append(_empty("No erasure request completed yet."))
    if d.erasure_open_hours:
        out.append(f"<p>{len(d.erasure_open_hours)} verified request(s) due and still open; oldest open for "
                   f"{_hours(d.erasure_open_hours[-1])}; past the SLA: {d.erasure_overdue}.</p>")
    return "".join(out)


def _proofs_section(d: ReportData) -> str:
    out = ["<h2 id=\"section-proofs\">Proofs</h2><p>The checks <code>lethe verify</code> and enforcement run, recomputed "
           "when this report was generated: each counts offending rows, zero means proven. A table whose "
           "identifier columns, suppression list and key are exactly those enforcement counted keeps "
           "enforcement's count of erased-subject rows (noted below the table).</p>"]
    if d.proofs:
        out.append(_table(
            ["proof", "what it proves", "offending", "result"],
            [[p.name, p.description, p.offending, p.status] for p in d.proofs], id_="proofs", numeric_from=2,
            cell_attrs=lambda row, i: {"data-proof": row[0], "class": "ok" if row[3] == "ok" else "fail"}
            if i == 3 else {}))
        out += [f'<p class="proof-note" data-proof="{esc(p.name)}">{esc(p.name)}: {esc(p.note)}.</p>'
                for p in d.proofs if p.note]
    if d.proofs_note:
        out.append(f'<p>{_status(None, "not run")} {esc(d.proofs_note)}</p>')
    out.append("<h3>Audit chain</h3>")
    if d.audit_problems is None:
        out.append(_empty("No audit log yet."))
    elif not d.audit_problems:
        mirror = "and its JSONL mirror agree" if d.audit_mirror_checked else "verified (the mirror was not compared)"
        out.append(f'<p id="audit-chain">{_status(True, "ok")} {d.audit_rows:,} rows: hash chain {mirror}.</p>')
    else:
        out.append(f'<p id="audit-chain">{_status(False, "FAILED")} {len(d.audit_problems)} problem(s) in '
                   f"{d.audit_rows:,} rows:</p>")
        out.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in d.audit_problems[:200]) + "</ul>")
        if len(d.audit_problems) > 200:
            out.append(f"<p>… and {len(d.audit_problems) - 200} more (run `lethe audit verify`).</p>")
    return "".join(out)


def _policy_section(d: ReportData) -> str:
    out = ["<h2 id=\"section-policy\">Policy and contracts</h2>"]
    if d.policy_rows:
        out.append("<h3>Retention policy applied</h3>")
        out.append(_table(["table", "purpose", "legal basis", "consent purpose", "retention", "on expiry",
                           "minimisation"], [list(r) for r in d.policy_rows], id_="policy", numeric_from=99))
    out.append("<h3>Data contracts</h3>")
    out.append(_table(["contract id", "version", "table", "purposes"], [list(r) for r in d.contracts],
                      id_="contracts", numeric_from=99))
    return "".join(out)


def render(d: ReportData) -> str:
    body = "".join([
        "<h1>Lethe compliance report</h1>", _header(d), _overview(d),
        _retention_section(d), _quarantine_section(d), _consent_section(d), _erasure_section(d),
        _proofs_section(d), _policy_section(d),
        "<p class=\"empty\">Counts only: this report holds no personal data (no emails, names, tokens or "
        "request ids).</p>",
    ])
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # nothing may be loaded from anywhere: the report is one file, read offline
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Lethe compliance report — {esc(d.run_id or 'no run yet')}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    if _EMAIL_LIKE.search(page):
        raise ReportError("the report would contain something that looks like an email address; refusing to write it")
    return page


def build_report(con: duckdb.DuckDBPyConnection, *, audit_mirror: Path | None, generated_at: datetime) -> str:
    """The compliance report as one self-contained HTML document.

    ``audit_mirror``: the audit log's JSONL mirror to compare with the table (None: the
    chain is verified, the mirror is not compared). ``generated_at`` (timezone-aware) is
    printed and is the "now" of the proofs and open-request ages, as in ``lethe verify``.
    Raises ReportError when the warehouse holds no Lethe table at all.
    """
    if generated_at.tzinfo is None:
        generated_at = generated_at.replace(tzinfo=timezone.utc)
    return render(collect(con, audit_mirror=audit_mirror, generated_at=generated_at))


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    warehouse: Path, out_dir: Path, *, audit_mirror=_DEFAULT_MIRROR, generated_at: datetime | None = None,
    keep_dated_copy: bool = True,
) -> Path:
    """Open the warehouse read-only, write ``out_dir/compliance-report.html`` atomically and
    (by default) a dated copy beside it (``compliance-report-YYYYMMDDTHHMMSSZ.html``), so
    earlier reports stay as evidence. Returns the path of ``compliance-report.html``.

    ``audit_mirror`` defaults to the mirror enforcement writes under $LETHE_HOME.
    """
    warehouse = Path(warehouse)
    if not warehouse.is_file():
        raise ReportError(f"no warehouse at {warehouse} (run `lethe run` first, or pass --warehouse)")
    if audit_mirror is _DEFAULT_MIRROR:
        from pipelines.enforce.assets import audit_mirror_path

        audit_mirror = audit_mirror_path()
    generated_at = generated_at or datetime.now(timezone.utc).replace(microsecond=0)
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        con.execute("SET enable_progress_bar = false")
        text = build_report(con, audit_mirror=audit_mirror, generated_at=generated_at)
    finally:
        con.close()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if keep_dated_copy:
        stamp = generated_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _atomic_write(out_dir / f"compliance-report-{stamp}.html", text)
    path = out_dir / REPORT_NAME
    _atomic_write(path, text)
    return path

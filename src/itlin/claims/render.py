"""The claims' results written out: claims.md (Markdown), claims.json (its schema is
workflow/schemas/claims.schema.json) and claims.html (the report's page, with its CSS), all with the
same content: a summary table, the method once, then each claim's per-model table.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from itlin.claims.verdicts import VERDICTS, ClaimResult, Settings, Test, join, short


def to_json(results: Sequence[ClaimResult], settings: Settings) -> dict:
    """The results as a JSON-ready mapping (schema: workflow/schemas/claims.schema.json); each model is named
    by its dataset, label and variant, a C5 model by its dataset, label and loss."""
    def finite(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "method": settings.bootstrap.describe(),
        "bootstrap": dataclasses.asdict(settings.bootstrap),
        "claims": [{
            "id": result.id, "statement": result.statement, "rule": result.rule, "basis": result.basis,
            "summary": result.summary,
            "models": [{
                "dataset": model.dataset, "model": model.model,
                **({"loss": model.loss} if model.loss else {"variant": model.variant}), "label": label,
                "verdict": model.verdict, "note": model.note,
                "tests": [{"measure": test.measure, "value": finite(test.value),
                           "interval": [finite(test.low), finite(test.high)], "op": test.op,
                           "threshold": test.threshold, "unit": test.unit, "verdict": test.verdict,
                           **({"lacking": test.lacking} if test.lacking else {}),
                           "detail": test.detail} for test in model.tests],
            } for label, model in zip(result.labels(), result.models)],
        } for result in results],
    }


def _value(test: Test) -> str:
    """'+3.2 pt [+1.0, +5.4]', '0.512 [0.4, 0.6]'; the value alone for a test lacking what its interval needs."""
    if not np.isfinite(test.value):
        return "—"
    if test.unit.strip() == "pt":
        value, interval = f"{test.value:+.1f}{test.unit}", f"[{test.low:+.1f}, {test.high:+.1f}]"
    else:
        value, interval = short(test.value), f"[{short(test.low)}, {short(test.high)}]"
    return value if test.lacking else f"{value} {interval}"


def _verdict(test: Test) -> str:
    """'supported', or 'not measured (needs at least 3 seeds, 1 measured)' for a test lacking what it needs."""
    return f"{test.verdict} ({test.lacking})" if test.lacking else test.verdict


def _summary_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    return [[result.id, result.statement, result.summary] for result in results]


def _detail_rows(result: ClaimResult) -> list[list[str]]:
    rows = []
    for label, model in zip(result.labels(), result.models):
        if not model.tests:
            rows.append([label, "—", "—", "—", "not measured", model.note])
        for number, test in enumerate(model.tests):
            notes = join(test.detail, model.note if number == 0 else "")
            combined = f" (model: {model.verdict})" if len(model.tests) > 1 and number == 0 else ""
            rows.append([label if number == 0 else "", test.measure, _value(test), test.rule, _verdict(test) + combined,
                         notes])
    return rows


DETAIL_COLUMNS = ["model", "measure", "value [95% interval]", "rule", "verdict", "notes"]


def to_markdown(results: Sequence[ClaimResult], settings: Settings) -> str:
    """claims.md: a summary table on top, the method once, then each claim's per-model table."""
    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", "<br>")

        return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows])

    lines = ["# The paper's claims, judged per model", "", *table(["claim", "statement", "verdict per model"],
                                                                   _summary_rows(results)),
             "", "## How to read this", "", settings.bootstrap.describe(), ""]
    for result in results:
        lines += [f"## {result.id}: {result.statement}", "", f"**Rule.** {result.rule}. **Rests on:** {result.basis}.",
                  "", f"**Verdict:** {result.summary}.", ""]
        if result.models:
            lines += table(DETAIL_COLUMNS, _detail_rows(result)) + [""]
    return "\n".join(lines)


CSS = ("body{font-family:sans-serif;max-width:75em;margin:1em auto;font-size:14px}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 6px;"
       "vertical-align:top;text-align:left}th{background:#f3f3f3}.supported{background:#e3f4e3}"
       ".not-supported{background:#f8e1e1}.inconclusive{background:#fdf3d8}.not-measured{color:#777}")
"""The style of claims.html: bordered tables, each verdict's cell coloured by its class (``_css``)."""


def to_html(results: Sequence[ClaimResult], settings: Settings) -> str:
    """claims.html: the same content as claims.md as one HTML page (shown inline by the report)."""
    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td{_css(c)}>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Claims</title><style>", CSS,
             "</style></head><body><h1>The paper's claims, judged per model</h1>",
             table(["claim", "statement", "verdict per model"], _summary_rows(results)),
             f"<h2>How to read this</h2><p>{html.escape(settings.bootstrap.describe())}</p>"]
    for result in results:
        parts.append(f"<h2>{html.escape(result.id)}: {html.escape(result.statement)}</h2>"
                     f"<p><b>Rule.</b> {html.escape(result.rule)}. <b>Rests on:</b> {html.escape(result.basis)}.</p>"
                     f"<p><b>Verdict:</b> {html.escape(result.summary)}.</p>")
        if result.models:
            parts.append(table(DETAIL_COLUMNS, _detail_rows(result)))
    return "\n".join(parts + ["</body></html>"]) + "\n"


def _css(text: object) -> str:
    """The class attribute of a verdict's table cell (for its colour); none for other cells."""
    verdict = str(text).split(" (")[0]
    return f" class='{verdict.replace(' ', '-')}'" if verdict in VERDICTS else ""


def write(results: Sequence[ClaimResult], settings: Settings, markdown: Path, json_path: Path, html_path: Path) -> None:
    """Write claims.md, claims.json and claims.html."""
    markdown.write_text(to_markdown(results, settings))
    json_path.write_text(json.dumps(to_json(results, settings), indent=2, ensure_ascii=False) + "\n")
    html_path.write_text(to_html(results, settings))

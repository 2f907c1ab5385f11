"""A DriftReport for machines (JSON) and for people (one self-contained HTML page: no script, no external
asset, so it opens the same from S3, an MLflow artifact view or a mail attachment).

The page: a summary (status, rows, drifted features, data-quality violations, the thresholds), then one
table row per feature (and the predictions) with its status colour, PSI, test and p-value, null shares, and
its baseline vs window shares per bin or category as small inline bars (CSS widths). Every value that comes
from data (feature names, categories, examples, the caller's context) is escaped with html.escape.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from flightdeck.monitoring.drift import DriftReport, FeatureDrift, Status

COLOURS = {
    Status.OK: "#1a7f37",
    Status.WARN: "#bf8700",
    Status.DRIFT: "#cf222e",
    Status.INSUFFICIENT_DATA: "#57606a",
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 8px}
table{border-collapse:collapse;margin:12px 0;width:100%}
th,td{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
.status{color:#fff;border-radius:10px;padding:1px 8px;font-weight:600;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}
.bars{font-size:11px;border:0;margin:0;width:auto}
.bars td{border:0;padding:0 4px}
.bar{height:6px;min-width:1px}
.base{background:#8c959f}
.win{background:#0969da}
.muted{color:#57606a}
"""


def to_json(report: DriftReport) -> str:
    """The report as JSON text (DriftReport.to_dict, sorted keys, no NaN: every float is finite or null)."""
    return json.dumps(report.to_dict(), indent=1, sort_keys=True, allow_nan=False)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: Status) -> str:
    return f'<span class="status" style="background:{COLOURS[status]}">{_e(status.value)}</span>'


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    return f"{value:.2e}" if 0 < abs(value) < 10 ** (-digits) else f"{value:.{digits}f}"


def _bars(feature: FeatureDrift) -> str:
    """Baseline (grey) vs window (blue) share per bin, as CSS-width bars scaled to the largest share."""
    top = max([*feature.baseline_shares, *feature.window_shares, 1e-9])
    rows = []
    for label, base, win in zip(feature.bins, feature.baseline_shares, feature.window_shares, strict=True):
        rows.append(
            f"<tr><td>{_e(label)}</td><td style='width:120px'>"
            f'<div class="bar base" style="width:{100 * base / top:.1f}%" title="baseline {base:.1%}"></div>'
            f'<div class="bar win" style="width:{100 * win / top:.1f}%" title="window {win:.1%}"></div>'
            f'</td><td class="num muted">{base:.1%} &rarr; {win:.1%}</td></tr>'
        )
    return f'<table class="bars">{"".join(rows)}</table>'


def _feature_row(feature: FeatureDrift) -> str:
    return (
        f"<tr><td><b>{_e(feature.name)}</b><br><span class='muted'>{_e(feature.type)}</span></td>"
        f"<td>{_badge(feature.status)}</td>"
        f'<td class="num">{_number(feature.psi)}</td>'
        f"<td>{_e(feature.test.value)}</td>"
        f'<td class="num">{_number(feature.p_value)}</td>'
        f'<td class="num">{feature.rows}</td>'
        f'<td class="num">{feature.baseline_null_share:.1%} &rarr; {feature.null_share:.1%}</td>'
        f"<td>{_bars(feature)}</td></tr>"
    )


def to_html(report: DriftReport, *, title: str = "Drift report", context: Mapping[str, str] | None = None) -> str:
    """The report as one HTML page. `context`: lines for the header (e.g. model, version, window), shown as
    "key: value", escaped like everything else."""
    t = report.thresholds
    head = "".join(f"<div><span class='muted'>{_e(k)}:</span> {_e(v)}</div>" for k, v in (context or {}).items())
    drifted = ", ".join(_e(n) for n in report.drifted_features) or "none"
    summary = [
        f"<div>Status {_badge(report.status)} &middot; {report.rows} rows (judged from {report.min_rows})</div>",
        f"<div>Drifted features: <b>{drifted}</b></div>",
    ]
    if report.prediction is not None:
        summary.append(f"<div>Predictions: {_badge(report.prediction.status)}</div>")
    q = report.quality
    if q.violations:
        items = "".join(f"<li>{_e(v)}</li>" for v in q.violations)
        summary.append(f"<div>Data-quality violations:<ul>{items}</ul></div>")
    if q.unexpected_columns:
        summary.append(f"<div>Unexpected columns: {_e(', '.join(q.unexpected_columns))}</div>")
    for u in q.unseen_categories:
        summary.append(
            f"<div>Unseen categories in <b>{_e(u.column)}</b>: {u.rows} rows ({u.share:.1%}), e.g. "
            f"{_e(', '.join(u.examples))}</div>"
        )
    summary.append(
        f"<div class='muted'>Rule: drift when PSI &ge; {t.psi_alert} (predictions {t.prediction_psi_alert}) with the "
        f"binned chi-squared test p &lt; {t.p_value}, or PSI &ge; {t.psi_warn} with the feature's two-sample test "
        f"p &lt; {t.p_value}; warn when PSI &ge; {t.psi_warn}; null share may rise by {t.max_null_share_increase:.0%}."
        "</div>"
    )
    body = ""
    judged = [*report.features, *([report.prediction] if report.prediction else [])]
    if judged:
        header = "".join(
            f"<th>{h}</th>"
            for h in ("feature", "status", "PSI", "test", "p-value", "rows", "nulls", "baseline vs window")
        )
        body = f"<table><tr>{header}</tr>{''.join(_feature_row(f) for f in judged)}</table>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{head}{''.join(summary)}{body}</body></html>"
    )

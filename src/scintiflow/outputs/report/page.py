"""`report.html`: the inline template and its rendering (Jinja2, autoescaped).

The page is self-contained: inline CSS (with print rules), no script, thumbnails as data
URIs, relative links to the run's other files.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scintiflow.outputs.report.inputs import ReportInput, drift_flagged, priority
from scintiflow.outputs.report.reasons import DISCLAIMER, REPORT_REASONS
from scintiflow.outputs.report.studies import Study

# --------------------------------------------------------------------------------------------
# HTML

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="scintiflow {{ version }}">
<title>Thyroid scintigraphy, night {{ inp.night }}</title>
<style>
:root { --ink: #1d2433; --muted: #5b6478; --line: #d9dee8; --abn: #b42318; --low: #b54708;
        --ok: #067647; --bar: #3e63dd; --bg-abn: #fef3f2; --bg-low: #fffaeb; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 24px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: var(--muted); margin: 0 0 8px; }
.disclaimer { border-left: 4px solid var(--low); background: var(--bg-low); padding: 6px 10px;
              margin: 8px 0 16px; font-weight: 600; }
.drift { border: 2px solid var(--abn); background: var(--bg-abn); padding: 8px 12px;
         margin: 0 0 16px; }
.drift strong { color: var(--abn); }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 110px; }
.card .n { font-size: 20px; font-weight: 700; }
.card .l { color: var(--muted); font-size: 12px; }
.card.abn .n { color: var(--abn); } .card.low .n { color: var(--low); }
h2 { font-size: 17px; margin: 20px 0 8px; border-bottom: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 6px; text-align: left;
         vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
thead { display: table-header-group; }
tr.p0 { background: var(--bg-abn); } tr.p1 { background: var(--bg-low); }
.ids div { white-space: nowrap; } .ids .name { font-weight: 700; }
.small { font-size: 11px; color: var(--muted); word-break: break-all; }
.imgs { display: flex; gap: 4px; }
.imgs figure { margin: 0; text-align: center; }
.imgs img, .imgs .none { width: 112px; height: 112px; display: block; background: #000;
                         object-fit: contain; }
.imgs .none { color: #ccc; font-size: 11px; padding-top: 44px; text-align: center; }
.imgs figcaption { font-size: 11px; color: var(--muted); }
.pred { font-weight: 700; }
.bars { width: 300px; }
.bar { display: flex; align-items: center; gap: 4px; font-size: 11px; margin: 2px 0; }
.bar .c { width: 128px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.bar .t { flex: 1; height: 9px; background: #eef0f5; border-radius: 2px; }
.bar .f { height: 9px; background: var(--bar); border-radius: 2px; }
.bar.top .f { background: var(--ink); }
.bar .v { width: 34px; text-align: right; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; font-size: 11px;
         font-weight: 600; margin: 1px 0; white-space: nowrap; }
.b-abn { background: var(--abn); color: #fff; } .b-low { background: var(--low); color: #fff; }
.b-earlier { background: #e4e7ec; color: #344054; }
.b-warn { background: #fdf0c4; color: #5d3b00; } .b-ok { background: #dcfae6; color: var(--ok); }
.b-err { background: #eee; color: #444; }
ul.plain { margin: 4px 0; padding-left: 18px; }
code { font-size: 12px; }
footer { margin-top: 24px; color: var(--muted); font-size: 12px; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { margin: 0; font-size: 11px; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
</style>
</head>
<body>
<header>
<h1>Thyroid scintigraphy, night {{ inp.night }}</h1>
<p class="meta">Run <code>{{ inp.run_id }}</code> &middot; model
{% if inp.model_name %}{{ inp.model_name }} {% endif %}<code>{{ inp.model_version }}</code>
&middot; engine <code>{{ inp.engine }}</code> &middot; rendered {{ rendered_at }}</p>
<p class="disclaimer" id="disclaimer">{{ disclaimer }}</p>
</header>
{% if drift %}
<section class="drift" id="drift">
<strong>Input drift detected.</strong> {{ drift.summary }}
{% if drift.details %}<ul class="plain">
{% for d in drift.details %}<li>{{ d }}</li>{% endfor %}
</ul>{% endif %}
Tonight's images differ from the data the model was trained on: read its results with extra
care.
</section>
{% endif %}
<section id="summary">
<h2>Summary</h2>
<div class="cards">
{% for c in cards %}<div class="card {{ c.css }}" id="count-{{ c.id }}">
<div class="n">{{ c.n }}</div><div class="l">{{ c.label }}</div></div>
{% endfor %}
</div>
<table class="counts" id="class-counts">
<thead><tr><th>predicted class</th><th>studies</th><th>of which low confidence</th></tr></thead>
<tbody>
{% for c in inp.classes %}<tr data-class="{{ c }}"><td>{{ c }}</td><td>{{ per_class[c] }}</td>
<td>{{ per_class_low[c] }}</td></tr>
{% endfor %}</tbody>
</table>
</section>
<section id="worklist-section">
<h2>Worklist: abnormal and low-confidence first</h2>
{% if studies %}
<table id="worklist-table">
<thead><tr><th>#</th><th>patient</th><th>study</th><th>scan and heatmap</th>
<th>class probabilities</th><th>confidence</th><th>checks</th></tr></thead>
<tbody id="worklist">
{% for s in studies %}
<tr class="p{{ s.priority }}" data-key="{{ s.key }}" data-priority="{{ s.priority }}">
<td>{{ s.rank }}</td>
<td class="ids">{% if s.ids %}
<div class="name">{{ s.ids.patient_name or "(no name)" }}</div>
<div>ID {{ s.ids.patient_id or "(none)" }}</div>
<div>born {{ s.ids.birth_date or "?" }}{% if s.ids.sex %}, {{ s.ids.sex }}{% endif %}</div>
{% else %}<div class="small">identifiers unavailable</div>{% endif %}</td>
<td>{% if s.ids %}<div>acc. {{ s.ids.accession or "(none)" }}</div>
<div>{{ s.ids.study_date }}</div>{% endif %}
<div class="small">{{ s.file }}</div></td>
<td><div class="imgs">
<figure>{% if s.scan_uri %}<img src="{{ s.scan_uri }}" alt="scan">
{%- else %}<div class="none">no scan</div>{% endif %}<figcaption>scan</figcaption></figure>
<figure>{% if s.overlay_uri %}<a href="{{ s.overlay_href }}">
<img src="{{ s.overlay_uri }}" alt="heatmap overlay"></a>
{%- else %}<div class="none">no heatmap</div>{% endif %}
<figcaption>where the model looked
{%- if s.sc_href %} &middot; <a href="{{ s.sc_href }}">DICOM</a>{% endif %}</figcaption>
</figure>
</div></td>
<td class="bars"><div class="pred">{{ s.label }}</div>
{% for b in s.bars %}<div class="bar{% if b.top %} top{% endif %}">
<span class="c">{{ b.name }}</span><span class="t">
<span class="f" style="display:block;width:{{ b.width }}%"></span></span>
<span class="v">{{ b.text }}</span></div>
{% endfor %}</td>
<td>{{ s.confidence }}<br>
{% if s.priority == 0 %}<span class="badge b-abn">abnormal</span><br>{% endif %}
{% if s.low %}<span class="badge b-low">low confidence</span>{% endif %}
{% if s.earlier %}<br><span class="badge b-earlier"
 title="first reported by run {{ s.earlier }}">earlier run</span>{% endif %}</td>
<td>{% for w in s.warnings %}<span class="badge b-warn">{{ w.code }}</span>
<span class="small">{{ w.text }}</span><br>{% endfor %}
{% for p in s.problems %}<span class="badge b-err">{{ p.code }}</span>
<span class="small">{{ p.text }}</span><br>{% endfor %}
{% if not s.warnings and not s.problems %}<span class="badge b-ok">passed</span>{% endif %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No study was scored in this run.</p>
{% endif %}
</section>
<section id="quarantine">
<h2>Quarantined and not scored</h2>
{% if inp.quarantine or inp.failures %}
<table>
<thead><tr><th>reason code</th><th>files</th><th>what it means</th></tr></thead>
<tbody>
{% for r in reason_rows %}<tr data-reason="{{ r.code }}" data-files="{{ r.n }}">
<td><code>{{ r.code }}</code>{{ r.note }}</td><td>{{ r.n }}</td><td>{{ r.text }}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="small">Quarantined files were kept aside unchanged, each with a reason file; a file
may carry several codes.</p>
{% else %}
<p>No file was quarantined{% if not checked %} (no data-check results in this run){% endif %}.</p>
{% endif %}
</section>
<section id="links">
<h2>Files of this run</h2>
<ul class="plain">
{% for label, href in links %}<li><a href="{{ href }}">{{ label }}</a></li>
{% endfor %}
</ul>
</section>
<footer>scintiflow {{ version }} &middot; {{ disclaimer }}</footer>
</body>
</html>
"""


def relative_key(key: str, base: str) -> str:
    return posixpath.relpath(key, base.strip("/") or ".")


def _drift_view(drift: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not drift_flagged(drift):
        return None
    assert drift is not None
    details: list[str] = []
    features = drift.get("features")
    if isinstance(features, Mapping):  # `scintiflow.pipeline.drift.compare`'s report
        drifted = [str(n) for n in drift.get("drifted_features") or [] if n in features]
        for name in drifted:
            f: Mapping[str, Any] = features[name] if isinstance(features[name], Mapping) else {}
            raw_limits = f.get("thresholds")
            limits: Mapping[str, Any] = raw_limits if isinstance(raw_limits, Mapping) else {}
            metrics = [
                f"{m.upper()} {f[m]:.3g}" + (f" (limit {limits[m]:.3g})" if m in limits else "")
                for m in ("psi", "ks")
                if isinstance(f.get(m), int | float)
            ]
            details.append(f"{name}: " + ", ".join(metrics) if metrics else name)
        summary = str(drift.get("summary") or "") or (
            f"{len(drifted)} of {len(features)} monitored input statistics moved beyond their "
            f"limits over {drift.get('n_images', '?')} images."
        )
        return {"summary": summary, "details": details}
    raw = drift.get("details", drift.get("reasons", []))
    if isinstance(raw, Mapping):
        raw = [f"{k}: {v}" for k, v in raw.items()]
    if isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, Mapping):
                details.append(", ".join(f"{k}: {v}" for k, v in item.items()))
            else:
                details.append(str(item))
    return {"summary": str(drift.get("summary", "") or ""), "details": details}


def render_html(inp: ReportInput, studies: Sequence[Study], *, dest_prefix: str) -> str:
    """The report page (Jinja2, autoescape on, no script) for studies in worklist order."""
    from jinja2 import Environment, StrictUndefined

    from scintiflow import __version__

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    reasons = inp.reasons
    views: list[dict[str, Any]] = []
    for s in studies:
        row = s.row
        probs = [(c, float(row.get(f"p_{c}", float("nan")))) for c in inp.classes]
        top = str(row.get("predicted_label"))
        sha = str(row.get("sha256", ""))
        views.append(
            {
                "key": str(row["key"]),
                "file": posixpath.basename(str(row["key"])),
                "rank": s.rank,
                "priority": priority(row),
                "ids": s.identifiers,
                "scan_uri": s.scan_uri,
                "overlay_uri": s.overlay_uri,
                "overlay_href": relative_key(str(row.get("overlay_key") or ""), dest_prefix)
                if row.get("overlay_key")
                else "",
                "sc_href": relative_key(s.sc_key, dest_prefix) if s.sc_key else "",
                "label": top,
                "bars": [
                    {
                        "name": c,
                        "top": c == top,
                        "width": f"{max(0.0, min(1.0, p)) * 100:.1f}" if math.isfinite(p) else "0",
                        "text": f"{p:.2f}" if math.isfinite(p) else "n/a",
                    }
                    for c, p in probs
                ],
                "confidence": f"{float(row.get('confidence', float('nan'))):.2f}",
                "low": bool(row.get("low_confidence")),
                "warnings": [
                    {"code": c, "text": reasons.get(c, "")}
                    for c in inp.warnings.get(str(row["key"]), ())
                ],
                "problems": [{"code": p, "text": REPORT_REASONS.get(p, "")} for p in s.problems],
                "sha": sha,
                "earlier": str(row.get("reported_in") or ""),
            }
        )
    per_class = Counter(str(s.row.get("predicted_label")) for s in studies)
    per_class_low = Counter(
        str(s.row.get("predicted_label")) for s in studies if s.row.get("low_confidence")
    )
    links = [(label, relative_key(key, dest_prefix)) for label, key in inp.links.items()]
    flagged = sum(1 for v in views if v["priority"] < 2)
    low = sum(1 for v in views if v["low"])
    threshold = inp.low_confidence_threshold
    cards = [
        *(
            [{"id": "inputs", "css": "", "n": inp.inputs, "label": "files received"}]
            if inp.inputs is not None
            else []
        ),
        {"id": "scored", "css": "", "n": len(views), "label": "scored"},
        {
            "id": "flagged",
            "css": "abn",
            "n": flagged,
            "label": "flagged (abnormal or low confidence)",
        },
        {
            "id": "low",
            "css": "low",
            "n": low,
            "label": "low confidence"
            + (f" (below {threshold:.2f})" if threshold is not None else ""),
        },
        {"id": "quarantined", "css": "", "n": inp.quarantined, "label": "quarantined"},
    ]
    if inp.carried_forward:
        cards.append(
            {
                "id": "carried",
                "css": "",
                "n": inp.carried_forward,
                "label": "files already reported by an earlier run tonight (included above)",
            }
        )
    not_scored = sum(inp.failures.values())
    if not_scored:
        cards.append({"id": "not-scored", "css": "", "n": not_scored, "label": "not scorable"})
    reason_rows = [
        {"code": c, "n": n, "note": "", "text": inp.reasons.get(c, "")}
        for c, n in inp.quarantine.items()
    ] + [
        {"code": c, "n": n, "note": " (not scorable)", "text": inp.reasons.get(c, "")}
        for c, n in inp.failures.items()
    ]
    return env.from_string(_TEMPLATE).render(
        cards=cards,
        reason_rows=reason_rows,
        inp=inp,
        studies=views,
        version=__version__,
        disclaimer=DISCLAIMER,
        rendered_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        drift=_drift_view(inp.drift),
        per_class={c: per_class.get(c, 0) for c in inp.classes},
        per_class_low={c: per_class_low.get(c, 0) for c in inp.classes},
        checked=inp.inputs is not None,
        links=links,
    )

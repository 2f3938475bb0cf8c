"""The benchmark report: figures beside their floor, as JSON and as a Markdown table.

A `Figure` is one measured number with the reference it was measured against in the same
run: a **floor** (the same hop with nothing of ours in it: a bare handler, a bare consumer,
a bare interpreter), a **baseline** (what you get without Shaman, e.g. Nomad's default
policy or polling) or a **target** (an issue's stated goal, where no floor can be run).
`x ref` is the cost relative to the reference: 1.0 is at it, 3.0 is three times its time
(or a third of its rate), below 1 is better than it.

Pure formatting: nothing here measures or starts anything (tests/unit/bench checks it on
canned numbers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bench.stats import cost_ratio

RefKind = Literal["floor", "baseline", "target"]


@dataclass(frozen=True)
class Figure:
    key: str  # stable id, e.g. "api.deploys_per_s"
    label: str  # what was measured, in words
    unit: str  # "ms", "s", "deploys/s", "builds/min", "MB", "events/s"
    value: float | None
    reference: float | None = None
    reference_label: str = ""
    reference_kind: RefKind = "floor"
    higher_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.reference is None:
            return None
        return cost_ratio(self.value, self.reference, self.higher_is_better)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return {k: _json_number(v) for k, v in data.items()}


def _json_number(value: Any) -> Any:
    # JSON has no NaN: a missing measurement is null.
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def format_value(value: float | None, unit: str) -> str:
    """A number for a human: few digits, thousands separated, the unit attached."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}" if unit else text


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(figures: Iterable[Figure]) -> str:
    """The results as one Markdown table, in the order given."""
    lines = [
        "| figure | measured | reference (same run) | x ref | notes |",
        "|---|---:|---|---:|---|",
    ]
    for f in figures:
        if f.reference is not None:
            ref = f"{format_value(f.reference, f.unit)} ({f.reference_kind}: {f.reference_label})"
        else:
            ref = f.reference_label or "-"
        lines.append(
            f"| {_cell(f.label)} | {format_value(f.value, f.unit)} | {_cell(ref)} "
            f"| {format_ratio(f.ratio)} | {_cell(f.note)} |"
        )
    return "\n".join(lines) + "\n"


def markdown_report(results: Mapping[str, Any], figures: Iterable[Figure]) -> str:
    """The whole Markdown file: how it was run, the table, what was skipped or failed."""
    meta = results.get("meta", {})
    out = ["# Shaman benchmark results", ""]
    out.append(
        f"Run `{meta.get('command', 'python -m bench')}` at {meta.get('started', '?')} "
        f"on {meta.get('cpus', '?')} CPUs (load average {meta.get('load_before', '?')} before, "
        f"{meta.get('load_after', '?')} after), {meta.get('duration_s', '?')} s in all. "
        "Each reference was measured in the same run, interleaved with the figure where "
        "possible; medians of several runs. `x ref`: 1.0 = at the reference, above = slower "
        "(or a lower rate), below = better. Figures taken while other work loads the machine "
        "are pessimistic; compare the ratios, not the absolute numbers."
    )
    for note in meta.get("notes", []):
        out += ["", f"Note: {note}"]
    out += ["", markdown_table(figures)]
    skipped: Mapping[str, str] = results.get("skipped", {})
    errors: Mapping[str, str] = results.get("errors", {})
    if skipped:
        out.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".")
        out.append("")
    if errors:
        out.append("Failed (no figures): " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        out.append("")
    return "\n".join(out)


def results_json(
    meta: Mapping[str, Any],
    figures: Iterable[Figure],
    raw: Mapping[str, Any],
    skipped: Mapping[str, str],
    errors: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "meta": dict(meta),
        "figures": [f.to_json() for f in figures],
        "raw": _clean(raw),
        "skipped": dict(skipped),
        "errors": dict(errors),
    }


def _clean(value: Any) -> Any:
    """NaN → None everywhere, so the object is valid JSON."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return _json_number(value)

"""The plate map's grid of wells as HTML: one cell per well, coloured by outcome, paler when less sure.

Built here with f-strings rather than in the template: a 1,536-well plate is 1,536 cells, and
Jinja's per-attribute lookups made that loop most of the page's server time (bench/bench_platemap.py).
Every text that comes from outside (well names, class names) is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

from xtalwatch.plate import row_letters
from xtalwatch.stages.well_outcome import OutcomeRule, WellState

__all__ = ["PlateMap", "plate_map"]


@dataclass
class PlateMap:
    """The grid's HTML and what the summary and legend count."""

    html: Markup
    counts: dict[str, int] = field(default_factory=dict)  # outcome class (or "none") → wells
    hits: int = 0  # wells whose outcome is a crystal class


@dataclass(frozen=True)
class _Look:
    """How one outcome class is drawn: worked out once per class, not once per well."""

    name: str  # escaped for HTML
    colour: str
    crystal: bool


def _cell(name: str, well_id: int, state: WellState, look: _Look | None) -> str:
    call = state.outcome.call
    confidence = call.confidence if call is not None else None
    if look is None:
        classes, style, data, said, outcome = "well no-call", "", "", "no reliable call", "none"
    else:
        classes = "well hit" if look.crystal else "well"
        # Confidence as intensity: a 50 % call is pale, a sure one saturated.
        alpha = 0.3 + 0.7 * confidence if confidence is not None else 1.0
        style = f' style="--c: {look.colour}; --a: {alpha:.2f}"'
        data = f' data-confidence="{confidence:.2f}"' if confidence is not None else ""
        said = look.name + (f" {round(confidence * 100)}%" if confidence is not None else "")
        outcome = look.name
    images = state.images
    title = f"{name}: {said} · {images} image{'' if images == 1 else 's'}"
    if state.flagged:
        title += f" · {state.flagged} flagged"
    if state.uncertain:
        title += f" · {state.uncertain} uncertain"
    return (f'<a class="{classes}" href="/wells/{well_id}" data-well="{name}" data-outcome="{outcome}"'
            f'{data}{style} title="{title}"></a>')


def plate_map(states: Mapping[int, WellState], rows: int, cols: int, rule: OutcomeRule,
              colours: Mapping[str, str]) -> PlateMap:
    """The grid for a plate of ``rows`` x ``cols`` wells: headers, then a cell per well (a link when the
    catalogue knows the well, an empty circle when no image named it)."""
    by_name = {state.well: (well_id, state) for well_id, state in states.items()}
    looks: dict[str, _Look] = {}
    result = PlateMap(Markup(""))
    parts = ['<span class="corner"></span>']
    parts += [f'<span class="col-head">{c}</span>' for c in range(1, cols + 1)]
    for r in range(rows):
        letters = row_letters(r)
        parts.append(f'<span class="row-head">{letters}</span>')
        for c in range(1, cols + 1):
            name = f"{letters}{c}"  # made here from a row and a column: nothing to escape
            known = by_name.get(name)
            if known is None:
                parts.append(f'<span class="well empty" data-well="{name}" data-outcome="none" '
                             f'title="{name}: no image"></span>')
                continue
            well_id, state = known
            label = state.outcome.label
            look = None
            if label is not None:
                look = looks.get(label)
                if look is None:
                    look = looks[label] = _Look(escape(label), colours.get(label, "#9aa3ad"), rule.is_crystal(label))
                result.hits += look.crystal
            parts.append(_cell(name, well_id, state, look))
            outcome = label or "none"
            result.counts[outcome] = result.counts.get(outcome, 0) + 1
    result.html = Markup("\n".join(parts))
    return result

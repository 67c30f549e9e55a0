"""Figures of a PBT / PB2 study for the report: the population's lineage (every segment's curve,
each exploit drawn from the checkpoint it copied) and the schedule the best member trained with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.read.queries import pbt_schedule
from hpo.store.attrs import PBT_ATTR


def segments(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The finished PBT segments, oldest first."""
    return sorted((t for t in trials if PBT_ATTR in t.user_attrs and t.state == TrialState.COMPLETE),
                  key=lambda t: t.number)


def lineage_figure(trials: Sequence[FrozenTrial]) -> Any:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    done = segments(trials)
    by_number = {t.number: t for t in trials}
    figure = go.Figure()
    shown: set[int] = set()
    for trial in done:
        seg = trial.user_attrs[PBT_ATTR]
        member = int(seg["member"])
        color = qualitative.Plotly[member % len(qualitative.Plotly)]
        own = sorted((s, v) for s, v in trial.intermediate_values.items() if s >= seg["start"])
        parent = by_number.get(seg["parent"]) if seg.get("parent") is not None else None
        if parent is not None and parent.intermediate_values:  # joined to where its checkpoint came from
            start = max(s for s in parent.intermediate_values if s < seg["start"]) if any(
                s < seg["start"] for s in parent.intermediate_values) else None
            if start is not None:
                own = [(start, parent.intermediate_values[start])] + own
        if not own:
            continue
        changed = seg.get("changed") or {}
        note = "" if seg.get("exploit") is None else (
            f"copied member {seg['exploit']}" + "".join(f", {k}: {a:.3g} -> {b:.3g}" if isinstance(a, (int, float))
                                                       and isinstance(b, (int, float)) else f", {k}: {a} -> {b}"
                                                       for k, (a, b) in changed.items()))
        figure.add_trace(go.Scatter(
            x=[s for s, _ in own], y=[v for _, v in own], mode="lines+markers",
            line=dict(color=color, dash="dot" if seg.get("exploit") is not None else "solid"),
            name=f"member {member}", legendgroup=f"member {member}", showlegend=member not in shown,
            hovertemplate=(f"member {member}, generation {seg['generation']}, trial {trial.number}"
                           f"{'<br>' + note if note else ''}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"),
        ))
        shown.add(member)
    figure.update_layout(xaxis_title="Step", yaxis_title="Value")
    return figure


def schedule_figure(trials: Sequence[FrozenTrial], best: FrozenTrial) -> Any:
    """The best member's values, step range by step range, one panel per parameter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    chain = pbt_schedule(list(trials), best)
    names = sorted({n for part in chain for n, v in part["params"].items()})
    figure = make_subplots(rows=max(1, len(names)), cols=1, shared_xaxes=True, subplot_titles=names)
    for row, name in enumerate(names, 1):
        xs: list[int] = []
        ys: list[Any] = []
        for part in chain:
            first, last = part["steps"]
            xs += [first, last + 1]
            ys += [part["params"].get(name)] * 2
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, showlegend=False,
                                    hovertemplate=f"{name} = %{{y:.4g}} from step %{{x}}<extra></extra>"),
                         row=row, col=1)
    figure.update_xaxes(title_text="Step", row=max(1, len(names)), col=1)
    return figure

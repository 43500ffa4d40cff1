"""The figures of the control experiments, from table.csv's rows (``report.build_table``):

- ``draw_perturbation_figure``: alignment (top row) and accuracy (bottom row: each method's matching accuracy,
  a one-sided task's score such as ``probe_acc``) against the perturbation level, one column a kind; a colour a
  metric (top) or a score (bottom), a line style a pair of sides. A kind's level-0 point is its ``~KIND:0``
  row, else the pair's unperturbed row.
- ``draw_performance_figure``: the joined performance against each alignment metric, one panel a metric, each
  point named by its model.

Both take the column lists they plot, so they depend on the table's layout only through them.
"""
import io

import numpy as np
import pandas as pd

from .errors import UsageError
from .files import atomic_write_bytes
from .names import parse_side
from .perturb import KINDS

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]


def _side(text):
    try:
        return parse_side(text)
    except UsageError:
        return None


def perturbed_rows(table):
    """(kind, level, perturbed side's role, pair label, pair key) of each row with one perturbed side, as a
    DataFrame indexed like ``table``; rows with no (or two) perturbed sides are left out."""
    out = {}
    for idx, row in table.iterrows():
        sides = {role: _side(row[f"{role}_side"]) for role in ("source", "target")}
        perturbed = [role for role, s in sides.items() if s is not None and s.perturbation is not None]
        if len(perturbed) != 1:
            continue
        p = sides[perturbed[0]].perturbation
        plain = {role: (s.unperturbed.text if s is not None else str(row[f"{role}_side"]))
                 for role, s in sides.items()}
        out[idx] = dict(kind=p.kind, level=float(p.level), role=perturbed[0], source=plain["source"],
                        target=plain["target"])
    return pd.DataFrame.from_dict(out, orient="index")


def perturbation_series(table, key_columns, label=str):
    """{kind: {pair label: DataFrame of that pair's rows (plus its level-0 row), sorted by level, with a
    ``level`` column}}. ``key_columns``: the table's key columns; rows of one pair agree on all of them but
    the sides. ``label``: side text -> short label."""
    info = perturbed_rows(table)
    if info.empty:
        return {}
    rest = [c for c in key_columns if c not in ("source_side", "target_side")]
    series = {}
    for (kind, source, target, role), members in info.groupby(["kind", "source", "target", "role"], sort=False):
        first = table.loc[members.index[0]]
        same_rest = np.ones(len(table), dtype=bool)
        for c in rest:
            same_rest &= (table[c].astype(str) == str(first[c])).to_numpy()
        rows = table.loc[members.index].assign(level=members["level"])
        if not (rows["level"] == 0).any():  # the unperturbed pair is every kind's level 0
            plain = table[same_rest & (table["source_side"] == source).to_numpy()
                          & (table["target_side"] == target).to_numpy()]
            if len(plain):
                rows = pd.concat([plain.iloc[[0]].assign(level=0.0), rows])
        name = f"{label(source)} -> {label(target)}"
        if any(n.startswith(name) for n in series.get(kind, {})):  # the same pair, perturbed on its other side
            name += f" ({role} perturbed)"
        series.setdefault(kind, {})[name] = rows.sort_values("level", kind="stable").assign(role=role)
    order = list(KINDS)
    return {k: series[k] for k in sorted(series, key=order.index)}


def _save(fig, path):
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    atomic_write_bytes(path, buf.getvalue())


def draw_perturbation_figure(table, path, key_columns, metric_columns, score_columns, label=str):
    """See the module docstring. ``score_columns``: {column: legend label} of the bottom row; ``label``: side
    text -> short label. Returns the kinds drawn (none: nothing is written)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    series = perturbation_series(table, key_columns, label)
    if not series:
        return []
    metrics = [c for c in metric_columns if c in table and table[c].notna().any()]
    accs = [c for c in score_columns if c in table and table[c].notna().any()]
    fig = Figure(figsize=(4.2 * len(series), 7.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(series), squeeze=False, sharey="row")
    pairs = list(dict.fromkeys(label for kind in series.values() for label in kind))
    for j, (kind, by_pair) in enumerate(series.items()):
        top, bottom = axes[0, j], axes[1, j]
        for label, rows in by_pair.items():
            style = LINESTYLES[pairs.index(label) % len(LINESTYLES)]
            for i, c in enumerate(metrics):
                top.plot(rows["level"], rows[c], color=f"C{i}", ls=style, marker=".", lw=1.2)
            for i, c in enumerate(accs):
                bottom.plot(rows["level"], rows[c], color=f"C{i}", ls=style, marker=".", lw=1.2)
        spec = KINDS[kind]
        roles = "/".join(sorted({r for rows in by_pair.values() for r in rows["role"]}, reverse=True))
        top.set_title(f"{kind}:{spec.level} ({'inputs' if spec.stage == 'input' else 'rows'} of the {roles})")
        bottom.set_xlabel(f"level {spec.level}")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("alignment")
    axes[1, 0].set_ylabel("accuracy")
    pair_handles = [Line2D([], [], color="gray", ls=LINESTYLES[i % len(LINESTYLES)], label=p)
                    for i, p in enumerate(pairs)]
    axes[0, -1].legend(handles=[Line2D([], [], color=f"C{i}", label=c) for i, c in enumerate(metrics)]
                       + pair_handles, fontsize=7, loc="best")
    axes[1, -1].legend(handles=[Line2D([], [], color=f"C{i}", label=score_columns[c]) for i, c in enumerate(accs)],
                       fontsize=7, loc="best")
    _save(fig, path)
    return list(series)


def draw_performance_figure(table, path, metric_columns, corr=None, label=str):
    """See the module docstring; ``corr``: the correlation table, for the panels' titles; ``label``: model
    name -> short label. Returns the metrics drawn (none: nothing is written)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "performance" not in table:
        return []
    metrics = [c for c in metric_columns if c in table and (table[c].notna() & table["performance"].notna()).any()]
    if not metrics:
        return []
    fig = Figure(figsize=(3.6 * len(metrics), 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    models = [m for m in dict.fromkeys(table["performance_model"]) if m]
    for ax, c in zip(axes, metrics):
        d = table[table[c].notna() & table["performance"].notna()]
        for k, model in enumerate(models):
            m = d[d["performance_model"] == model]
            ax.scatter(m[c], m["performance"], s=22, marker=MARKERS[k // 10 % len(MARKERS)], color=f"C{k % 10}",
                       label=label(model))
        title = c
        if corr is not None:
            hit = corr[(corr["x"] == c) & (corr["y"] == "performance")]
            if len(hit):
                r = hit.iloc[0]
                title += f"\nr={r['pearson']:.2f}, ρ={r['spearman']:.2f} (n={r['n']})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(c)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("performance")
    axes[-1].legend(fontsize=6, loc="best")
    _save(fig, path)
    return metrics

"""The table and the figures from run.py's averaged results (``results/<name>.csv``, one row each).

``read_results`` -> rows (dicts) -> ``build_table``: one row per group (``Config.group()``: everything a run
hashes but its method and the method's options; the ``group`` column), shown by ``KEY_COLUMNS`` (task, both
sides with layer, language and perturbation, data, anchors, clustering, seeds, data folder), so a classes run
and a captions run of the same models, two languages, two perturbation levels or two data folders stay apart;
one column per method label (the method and its non-default options, ``qap[restarts=50]``). A one-sided task's
rows (the probe: no method) fill its score columns as they are (``probe_acc``). Repeated runs of one (group,
method label) count once: the latest ``created``. ``draw_figure`` plots matching accuracy against an alignment
metric, ``write_report`` writes ``table.csv`` and the figure; ``write_full_report`` (run.py --report) also the
correlations (``src/correlations.py``, with a joined performance table) and the control figures
(``src/control_figures.py``). A task's score columns (``image_acc``) come from the task registry.

Older result files lack some columns: a missing ``task`` is ``captions``, a missing side is the row's
``Source model`` / ``Target model``, a missing group is the key columns, missing metrics are left out.
"""
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import control_figures, metrics
from .correlations import correlation_table, format_correlations, is_missing, join_performance, no_correlation
from .errors import DataError, UsageError
from .files import CORRELATIONS_NAME, NOT_RESULTS, TABLE_NAME, atomic_write_bytes, atomic_write_text
from .names import FINAL, parse_model, parse_side
from .results import INPUT_COLUMNS, cut_csv
from .tasks import score_columns

PERTURBATION_FIGURE, PERFORMANCE_FIGURE = "perturbation.png", "performance.png"

_logger = logging.getLogger(__name__)

KEY_COLUMNS = ["task", "source_side", "target_side", "Base data", "Query data", "base_samples",
               "query_samples", "clustering_mode", "stretch", "seeds", "base_seed", "permutations", "data_dir"]
GROUP = "group"                             # the hash that keys a row; in table.csv, never printed
CONTROL_BASES = {"pixels"}                  # with random: models, the figure's controls

# The paper's method order for the table's columns; methods not listed follow, sorted by name (a method's
# variants with other options right after it).
METHOD_ORDER = ("linear", "cos", "relative", "linear_local_CKA", "kernel_local_CKA", "qap")


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

def read_results(results_dir):
    """Rows (dicts keyed by column) of every ``results_dir/*.csv`` except summary.csv and table.csv.

    Files that cannot be read as a result CSV are skipped with a warning (a report should not fail on one
    stray file).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"{results_dir} is not a folder; run.py writes its results there")
    rows = []
    for path in sorted(results_dir.glob("*.csv")):
        if path.name in NOT_RESULTS:
            continue
        cut = cut_csv(path)
        if cut:
            _logger.warning("skipping %s: it %s; re-run its configuration to write it whole", path, cut)
            continue
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as e:  # pandas' parser and empty-file errors are ValueErrors
            _logger.warning("skipping %s: %s", path, e)
            continue
        if not {"method", "matching_acc"} <= set(df.columns):
            _logger.warning("skipping %s: no method / matching_acc columns, not a result file", path)
            continue
        rows.extend(df.to_dict("records"))
    return rows


def _plain(v):
    """numpy scalars -> Python values, integral floats of count columns -> int."""
    return v.item() if isinstance(v, np.generic) else v


def _number(v):
    """A float, nan for a missing or non-numeric cell."""
    try:
        return float("nan") if is_missing(v) else float(_plain(v))
    except (TypeError, ValueError):
        return float("nan")


def _as_int(v):
    v = _plain(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
        return int(v)
    return v


def _as_bool(v):
    v = _plain(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)
    return v


def row_key(row):
    """The group a row belongs to, as a tuple in ``KEY_COLUMNS`` order and then the group hash."""
    def get(col, fallback=""):
        v = row.get(col)
        return fallback if is_missing(v) else _plain(v)
    return (get("task", "captions"),
            str(get("source_side", get("Source model"))),
            str(get("target_side", get("Target model"))),
            get("Base data"), get("Query data"),
            _as_int(get("base_samples")), _as_int(get("query_samples")), _as_int(get("clustering_mode")),
            _as_bool(get("stretch", False)), str(get("seeds")), _as_int(get("base_seed")),
            _as_int(get("permutations")), str(get("data_dir")), str(get(GROUP)))


def method_label(row):
    """A row's method with its non-default options (the ``method_options`` JSON): ``qap[restarts=50]``; ""
    for a one-sided task's row (no method)."""
    if is_missing(row.get("method")):
        return ""
    method = str(_plain(row.get("method")))
    options = row.get("method_options")
    if is_missing(options):
        return method
    try:
        items = json.loads(str(options)).items()
    except (ValueError, AttributeError):
        return f"{method}[{options}]"
    return f"{method}[{','.join(f'{k}={v}' for k, v in items)}]" if items else method


def _created(row):
    """The run's time as nanoseconds since 1970 (UTC); a missing or unreadable time sorts first."""
    ts = pd.to_datetime(row.get("created"), utc=True, errors="coerce")
    return -math.inf if pd.isna(ts) else ts.value


def _natural(text):
    parts = re.split(r"(\d+)", text)  # text at even positions, digits at odd: comparable tuples
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _sort_value(v):
    # numbers before text, so mixed old and new files still sort; text in natural order (_blocks.3
    # before _blocks.11)
    if isinstance(v, (bool, int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return (0, float(v), ())
    return (1, 0.0, _natural(str(v)))


SIDE_KEYS = ("source_side", "target_side")


def _side_sort(side):
    """Sides in reading order: models by name, a model's layers in depth order with its final row last,
    controls (pixels, random:) after the models; a side's perturbations after it, by kind and level."""
    mn = _model(_side_model(side))
    if mn is None:
        return (1, (), (), (), _natural(str(side)))
    try:
        p = parse_side(side).perturbation
    except UsageError:
        p = None
    pert = () if p is None else (p.kind, float(p.level))
    return (int(is_control(mn.text)), _natural(mn.base), natural_layer_key(mn.layer), pert,
            _natural(str(parse_side(side).unperturbed) if p else str(side)))


def _method_order(labels):
    def key(label):
        base = label.split("[", 1)[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), base, _natural(label))
    return sorted(labels, key=key)


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------

def _score_suffixes():
    """(title, column suffix, row column) of the per-method blocks: matching accuracy, top-1, then every
    two-sided task's score columns (``{method}_{column}``)."""
    return ([("matching accuracy", "_acc", "matching_acc"), ("top-1", "_top1", "top_1")]
            + [(c.title, f"_{c.name}", c.name) for c in score_columns()])


def _inputs(row):
    vals = tuple(str(row.get(c, "")) for c in INPUT_COLUMNS)
    return None if all(v in ("", "nan", "None") for v in vals) else vals


def _drop_other_inputs(key, slot):
    """One row of table.csv comes from one version of its inputs: the newest result's. A method's result made
    from other inputs (a side re-extracted since, and only some methods re-run) is left out with one warning,
    not mixed into the row. Results that record no inputs (older runs) cannot be told apart and stay."""
    newest = max(slot.values(), key=lambda v: v[0])[1]
    want = _inputs(newest)
    if want is None:
        return
    stale = sorted(label or "(no method)" for label, (_, row) in slot.items()
                   if _inputs(row) is not None and _inputs(row) != want)
    for label in list(slot):
        if _inputs(slot[label][1]) not in (None, want):
            del slot[label]
    if stale:
        _logger.warning("%s -> %s (group %s): the results of %s were made from other inputs than the newest "
                        "result of this row (a side re-extracted, edited or re-clustered since): left out of "
                        "table.csv; run them again to fill the row", newest.get("source_side", ""),
                        newest.get("target_side", ""), key[-1], ", ".join(stale))


def build_table(rows):
    """One row per group: the key (``KEY_COLUMNS``, then ``group``), the alignment metric columns present,
    then for each method label ``{label}_acc`` (matching_acc), ``{label}_top1`` (top_1; absent for methods
    without a ranking, e.g. qap's -1) and ``{label}_{column}`` for each task score column the rows have
    (``image_acc``), then the one-sided tasks' score columns the rows have, as they are (``probe_acc``). Rows
    sorted by key.
    """
    latest = {}  # key -> method label -> ((created, order), row)
    for order, row in enumerate(rows):
        label = method_label(row)
        rank = (_created(row), order)  # equal times: the later row read wins
        slot = latest.setdefault(row_key(row), {})
        if label not in slot or rank >= slot[label][0]:
            slot[label] = (rank, row)

    for key, slot in latest.items():
        _drop_other_inputs(key, slot)

    all_metric_cols = metrics.metric_columns(1)
    metric_cols = [c for c in all_metric_cols if any(c in row for row in rows)]
    labels = _method_order({m for slot in latest.values() for m in slot if m})
    picked = [(label, row) for slot in latest.values() for label, (_, row) in slot.items()]

    def has(label, col, ok=lambda v: True):
        return any(lab == label and not math.isnan(_number(r.get(col))) and ok(_number(r.get(col)))
                   for lab, r in picked)

    method_cols = []
    for m in labels:
        for _, suffix, src in _score_suffixes():
            if src == "matching_acc" or has(m, src, (lambda v: v >= 0) if src == "top_1" else (lambda v: True)):
                method_cols.append((f"{m}{suffix}", m, src))  # top_1 -1 marks a method with no ranking

    plain_cols = [c.name for c in score_columns(sides=1)
                  if any(lab == "" and not math.isnan(_number(r.get(c.name))) for lab, r in picked)]

    out = []
    for key, slot in latest.items():
        group = [slot[m][1] for m in labels if m in slot]
        rec = dict(zip(KEY_COLUMNS + [GROUP], key))
        for c in metric_cols:
            # the metrics describe the pair, not the method: the first row that has the value
            vals = [_number(r.get(c)) for r in group if not math.isnan(_number(r.get(c)))]
            rec[c] = vals[0] if vals else float("nan")
        for col, m, src in method_cols:
            v = _number(slot[m][1].get(src)) if m in slot else float("nan")
            rec[col] = float("nan") if src == "top_1" and v < 0 else v
        for c in plain_cols:
            rec[c] = _number(slot[""][1].get(c)) if "" in slot else float("nan")
        out.append(rec)
    out.sort(key=lambda rec: [_side_sort(rec[c]) if c in SIDE_KEYS else _sort_value(rec[c])
                              for c in KEY_COLUMNS + [GROUP]])  # stable
    return pd.DataFrame(out, columns=KEY_COLUMNS + [GROUP] + metric_cols + [c for c, _, _ in method_cols]
                        + plain_cols)


def table_methods(table):
    """The method labels of a table, in column order (from its ``{label}_acc`` columns; a task score column
    that ends in ``_acc``, as ``{label}_image_acc``, is not a method)."""
    plain = {c.name for c in score_columns(sides=1)}
    accs = [c[:-len("_acc")] for c in table.columns if c.endswith("_acc") and c not in plain]
    scores = [f"_{c.name}"[:-len("_acc")] for c in score_columns() if c.name.endswith("_acc")]
    return [m for m in accs if not any(m.endswith(s) and m[:-len(s)] in accs for s in scores)]


def correlations(table, x, method):
    """(Pearson r, Spearman rho) of column ``x`` and ``{method}_acc`` over the table's rows with both;
    nan when fewer than 3 such rows or either is constant."""
    y = f"{method}_acc"
    if x not in table.columns or y not in table.columns:
        return float("nan"), float("nan")
    d = table[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(d) < 3 or d[x].nunique() < 2 or d[y].nunique() < 2:
        return float("nan"), float("nan")
    return float(stats.pearsonr(d[x], d[y])[0]), float(stats.spearmanr(d[x], d[y])[0])


def correlation_lines(table, x):
    """One printable line per method: its Pearson and Spearman correlation with ``x``."""
    lines = []
    for m in table_methods(table):
        r, rho = correlations(table, x, m)
        n = int(table[[x, f"{m}_acc"]].dropna().shape[0]) if x in table.columns else 0
        why = no_correlation(table, x, f"{m}_acc")
        lines.append(f"{m}: matching accuracy vs {x}: " + (why.replace("configuration", "pair") if why else
                                                           f"pearson {r:.4f}, spearman {rho:.4f} ({n} pairs)"))
    return lines


# ----------------------------------------------------------------------------------------------------------
# The figure
# ----------------------------------------------------------------------------------------------------------

def natural_layer_key(layer):
    """Sort key of a layer path in natural order: ``_blocks.1`` < ``_blocks.3`` < ``_blocks.11``, and
    ``final`` (or no layer) last."""
    if layer in (None, "", FINAL):
        return (1, ())
    return (0, _natural(str(layer)))


def _side_model(side):
    """The model of a side string; older rows hold a bare model name."""
    try:
        return parse_side(side).model
    except UsageError:
        return str(side)


def _model(text):
    try:
        return parse_model(text)
    except UsageError:
        return None


def is_control(model):
    """``pixels`` and ``random:`` models: baselines, not points of a depth series."""
    mn = _model(model)
    return mn is not None and (mn.random or mn.base in CONTROL_BASES)


def short_label(model):
    """A readable model label: hub prefix and organisation dropped, a long family prefix dropped
    (``efficientnet_lite0@_blocks.8`` -> ``lite0@_blocks.8``), ``random:`` kept."""
    mn = _model(model)
    if mn is None:
        return str(model)
    base = mn.base.split(":", 1)[-1].rsplit("/", 1)[-1]
    if len(base) > 12 and "_" in base:
        base = base.split("_", 1)[1]
    return ("random:" if mn.random else "") + base + (f"@{mn.layer}" if mn.layer else "")


def varying_side(table):
    """``source_side`` or ``target_side``: the one with more distinct values; on a tie the image side
    (the usual depth figure varies the vision model), else the target side."""
    counts = {c: table[c].nunique() for c in ("source_side", "target_side")}
    if counts["source_side"] != counts["target_side"]:
        return max(counts, key=counts.get)
    for c in ("target_side", "source_side"):
        try:
            if len(table) and parse_side(table[c].iloc[0]).modality == "img":
                return c
        except UsageError:
            pass
    return "target_side"


def layer_series(table, vary=None):
    """Lists of row labels (index) of ``table`` to join by a line: rows whose model on the ``vary`` side
    (default ``varying_side``) has one base and differs only by layer, everything else in the key equal,
    in natural layer order. Controls and lone points are not part of any series."""
    vary = vary or varying_side(table)
    rest = [c for c in KEY_COLUMNS if c != vary]
    series = {}
    for idx, side in table[vary].items():
        model = _side_model(side)
        mn = _model(model)
        if mn is None or is_control(model) or "~" in str(side):  # a perturbed side is no layer of a series
            continue
        key = (mn.base, tuple(table.at[idx, c] for c in rest))
        series.setdefault(key, []).append((natural_layer_key(mn.layer), idx))
    return [[idx for _, idx in sorted(members, key=lambda m: m[0])]
            for members in series.values() if len(members) > 1]


def _check_metric(table, x):
    if x not in table.columns:
        present = [c for c in table.columns if c in metrics.metric_columns(1)]
        raise UsageError(f"metric {x!r} is not in the results; present: {', '.join(present) or 'none'}")


def draw_figure(table, path, x="kernel_cka", title=None):
    """Matching accuracy (y) against the metric ``x``, one point per pair and method, written to ``path``
    as PNG (atomically). Returns {method: (pearson, spearman)}, also logged.

    Points of one base model that differ only by layer (on the side that varies across the table) are
    joined in natural layer order, one line per method; controls (``pixels``, ``random:``) get an x marker
    and no line. Each pair is named once, beside its first point.
    """
    # the object API with the Agg canvas: no pyplot, no display, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_metric(table, x)
    vary = varying_side(table)
    other = "source_side" if vary == "target_side" else "target_side"
    both_vary = table[other].nunique() > 1

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    corrs, any_control = {}, False
    for i, method in enumerate(table_methods(table)):
        color = f"C{i % 10}"
        corrs[method] = r, rho = correlations(table, x, method)
        d = table[pd.to_numeric(table[x], errors="coerce").notna() & table[f"{method}_acc"].notna()]
        models = d[vary].map(_side_model)
        control = models.map(is_control).astype(bool)
        any_control |= bool(control.any())
        ax.scatter(d[x][~control], d[f"{method}_acc"][~control], color=color, marker="o", s=28,
                   label=f"{method} (r={r:.2f}, ρ={rho:.2f})" if math.isfinite(r) else f"{method} (no correlation)")
        ax.scatter(d[x][control], d[f"{method}_acc"][control], color=color, marker="x", s=40)
        for idxs in layer_series(d, vary):
            ax.plot(d.loc[idxs, x], d.loc[idxs, f"{method}_acc"], color=color, lw=1, alpha=0.6)
    # each pair named once, above its highest point
    for idx in table.index:
        ys = [v for v in (pd.to_numeric(table.at[idx, f"{m}_acc"], errors="coerce") for m in table_methods(table))
              if pd.notna(v)]
        xv = pd.to_numeric(table.at[idx, x], errors="coerce")
        if not ys or pd.isna(xv):
            continue
        def name(side):  # a perturbed side keeps its perturbation
            return side_label(side) if "~" in str(side) else short_label(_side_model(side))
        label = name(table.at[idx, vary])
        if both_vary:
            label = f"{name(table.at[idx, other])} | {label}"
        ax.annotate(label, (xv, max(ys)), xytext=(4, 3), textcoords="offset points", fontsize=7)
    if any_control:
        ax.scatter([], [], color="gray", marker="x", label="control (pixels, random:)")
    ax.set_xlabel(x)
    ax.set_ylabel("matching accuracy")
    ax.set_title(title or f"Matching accuracy vs {x}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    atomic_write_bytes(path, buf.getvalue())
    for m, (r, rho) in corrs.items():
        why = no_correlation(table, x, f"{m}_acc")
        if why:
            _logger.info("%s: %s vs matching accuracy: %s", m, x, why)
        else:
            _logger.info("%s: %s vs matching accuracy: pearson %.4f, spearman %.4f", m, x, r, rho)
    return corrs


# ----------------------------------------------------------------------------------------------------------
# Both
# ----------------------------------------------------------------------------------------------------------

def side_label(side):
    """``efficientnet_lite0@_blocks.8:img`` -> ``lite0@_blocks.8``; a language and a perturbation stay
    (``use:zh``, ``mpnet~swap:0.5``)."""
    try:
        parsed = parse_side(side)
    except UsageError:
        return str(side)
    return (short_label(parsed.model) + (f":{parsed.lang}" if parsed.lang else "")
            + (f"~{parsed.perturbation}" if parsed.perturbation else ""))


def format_table(table):
    """Fixed-width text, floats to 4 decimals: key columns that are the same in every row said once above,
    then one block each for the alignment metrics, matching accuracy, top-1 and the tasks' score columns
    (per-image accuracy), a row per pair (``source -> target``) and a column per metric or method."""
    same = [c for c in KEY_COLUMNS if c in table and table[c].nunique(dropna=False) == 1]
    head = ", ".join(f"{c}: {table[c].iloc[0]}" for c in same if not is_missing(table[c].iloc[0]))
    pair = [side_label(t) if is_missing(s) else f"{side_label(s)} -> {side_label(t)}"
            for s, t in zip(table["source_side"], table["target_side"])]
    one_sided = np.array([is_missing(s) for s in table["source_side"]], dtype=bool)
    rest = [c for c in KEY_COLUMNS if c not in same and c not in SIDE_KEYS]
    methods = table_methods(table)
    blocks = [("alignment", [c for c in metrics.metric_columns(1) if c in table], lambda c: c)]
    for title, suffix, _ in _score_suffixes():
        cols = [f"{m}{suffix}" for m in methods if f"{m}{suffix}" in table]
        n = len(suffix)
        blocks.append((title, cols, lambda c, n=n: c[:-n]))
    for c in score_columns(sides=1):
        if c.name in table:
            blocks.append((c.title, [c.name], lambda c: c))
    if "performance" in table:  # joined by write_full_report
        blocks.append(("joined performance", ["performance", "performance_model"], lambda c: c))
    out = [head] if head else []
    for title, cols, name in blocks:
        if not cols:
            continue
        # a one-sided task's rows (the probe) show only in the blocks they have numbers for
        shown = ~(one_sided & table[cols].isna().all(axis=1).to_numpy())
        if not shown.any():
            continue
        block = table[rest + cols].rename(columns={c: name(c) for c in cols})[shown]
        block.insert(0, title, [p for p, keep in zip(pair, shown) if keep])
        out.append(block.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return "\n\n".join(out)


def write_report(rows, results_dir, x="kernel_cka", figure_name="figure1.png"):
    """``results_dir/table.csv`` (full precision, atomically) and the figure (``figure_name`` under
    results_dir; an absolute path goes where it says; none, and None returned, when no row has a method:
    a probe-only table). Returns (table_path, figure_path, text) with text the printable table and one
    correlation line per method."""
    table = build_table(rows)
    if table.empty:
        raise DataError(f"no result rows for {results_dir}; run run.py first (it writes results/<name>.csv)")
    results_dir = Path(results_dir)
    table_path, figure_path = results_dir / TABLE_NAME, results_dir / figure_name
    _check_metric(table, x)  # refuse before writing anything
    atomic_write_bytes(table_path, table.to_csv(index=False).encode("utf-8"))
    if table_methods(table):
        draw_figure(table, figure_path, x)
    else:
        figure_path = None
    lines = correlation_lines(table, x)
    text = format_table(table) + ("\n\n" + "\n".join(lines) if lines else "")
    return table_path, figure_path, text


def write_full_report(rows, results_dir, x="kernel_cka", figure_name="figure1.png", performance=None):
    """run.py --report: ``write_report``'s table and figure, with ``performance`` ({model: score},
    ``correlations.read_performance``) joined as table.csv's ``performance`` column; ``correlations.csv``
    (every alignment metric against every method's accuracy and the performance); ``perturbation.png`` when
    rows have perturbed sides, ``performance.png`` with a performance table. Everything is checked (the join
    included) before the first file is written. Returns (paths written, printable text)."""
    table = build_table(rows)
    if table.empty:
        raise DataError(f"no result rows for {results_dir}; run run.py first (it writes results/<name>.csv)")
    _check_metric(table, x)
    if performance is not None:
        table = join_performance(table, performance)
    results_dir = Path(results_dir)
    methods = table_methods(table)
    metric_cols = [c for c in metrics.metric_columns(1) if c in table]
    ys = [f"{m}_acc" for m in methods] + (["performance"] if performance is not None else [])
    corr = correlation_table(table, metric_cols, ys)
    lines = correlation_lines(table, x)
    text = "\n\n".join([format_table(table)] + (["\n".join(lines)] if lines else [])
                         + [format_correlations(corr)])
    paths = [results_dir / TABLE_NAME]
    atomic_write_bytes(paths[0], table.to_csv(index=False).encode("utf-8"))
    if methods:
        paths.append(results_dir / figure_name)
        draw_figure(table, paths[-1], x)
    paths.append(results_dir / CORRELATIONS_NAME)
    atomic_write_text(paths[-1], corr.to_csv(index=False))
    scores = {**{f"{m}_acc": m for m in methods}, **{c.name: c.name for c in score_columns(sides=1)}}
    if control_figures.draw_perturbation_figure(table, results_dir / PERTURBATION_FIGURE, KEY_COLUMNS,
                                                metric_cols, scores, label=side_label):
        paths.append(results_dir / PERTURBATION_FIGURE)
    if control_figures.draw_performance_figure(table, results_dir / PERFORMANCE_FIGURE, metric_cols, corr,
                                               label=short_label):
        paths.append(results_dir / PERFORMANCE_FIGURE)
    return paths, text

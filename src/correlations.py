"""Which metric predicts what: a per-model performance table joined to table.csv, and correlations with
bootstrap intervals.

- ``read_performance(path, model, score)``: {model: score} from any CSV (e.g. timm's published ImageNet
  results, or the probe's table.csv with ``--performance-model target_side --performance-score probe_acc``).
  Model names are read as the sides write them (a side, ``pixels:img``, is read as its model); rows without a
  model or a score, and perturbed sides (``pixels:img~blur:2`` is not the model's performance), are skipped;
  a model listed twice with two scores is refused.
- ``join_performance(table, performance)``: adds ``performance`` (the score of the target side's model, else
  of the source side's) and ``performance_model`` (which model it is) to table.csv's rows.
- ``correlation_table(table, xs, ys)``: for every x (alignment metric) and y (a method's accuracy, the
  performance) over the rows (configurations) that have both: n, Pearson's r and Spearman's rho (ties get
  average ranks), each with a 95% percentile bootstrap interval: ``RESAMPLES`` resamples of the rows with
  replacement from ``np.random.default_rng(SEED)``; resamples where a side is constant (no correlation) are
  left out of the percentiles. Pairs with fewer than 3 rows are left out.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, UsageError
from .names import parse_model, parse_side

RESAMPLES = 1000
SEED = 0
CI = 95
COLUMNS = ["x", "y", "n", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo", "spearman_hi"]


# ----------------------------------------------------------------------------------------------------------
# Performance
# ----------------------------------------------------------------------------------------------------------

def _perturbed(value):
    try:
        return parse_side(str(value).strip()).perturbation is not None
    except UsageError:
        return False


def model_key(value):
    """A model name as the sides write it: a side is read as its model (``pixels:img`` -> ``pixels``),
    ``MODEL@final`` as ``MODEL``; anything else as it is, stripped."""
    text = str(value).strip()
    for parse in (lambda t: parse_side(t).model, lambda t: parse_model(t).text):
        try:
            return parse(text)
        except UsageError:  # not a side (or a model name): try the next reading
            continue
    return text


def is_missing(v):
    """An empty table cell: None, NaN, or blank text."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def read_performance(path, model_column="model", score_column="score"):
    """{model: score} of a performance CSV, checked (DataError naming the file and the fix)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--performance {path} is not a file: give a CSV with a model column and a score column")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"--performance {path} cannot be read as a CSV ({type(e).__name__}: {str(e)[:200]})")
    absent = [c for c in (model_column, score_column) if c not in frame.columns]
    seps = [sep for sep in (";", "\t", "|") if len(frame.columns) == 1 and sep in str(frame.columns[0])]
    if absent and seps:  # a spreadsheet's export in a locale where the comma is the decimal mark
        raise DataError(f"--performance {path} has its columns separated by {seps[0]!r} (its header: "
                        f"{str(frame.columns[0])[:80]!r}); this reads comma-separated CSV: save it with ',' "
                        f"between columns and '.' in numbers")
    if absent:
        flags = {model_column: "--performance-model", score_column: "--performance-score"}
        raise DataError(f"--performance {path} has no column {absent[0]!r} (its columns: "
                        f"{', '.join(map(str, frame.columns[:12]))}); name the model and score columns with "
                        f"{flags[absent[0]]} COLUMN")
    scores, empty = {}, 0
    for i, (model, score) in enumerate(zip(frame[model_column], frame[score_column]), start=2):
        if is_missing(model) or _perturbed(model):
            continue
        if is_missing(score) or str(score).strip().lower() == "nan":  # pandas' and numpy's missing value
            empty += 1
            continue
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"--performance {path}, line {i}: score {score!r} of {model!r} is not a number")
        if not math.isfinite(value):
            raise DataError(f"--performance {path}, line {i}: score {score!r} of {model!r} is not a finite "
                            f"number; leave the cell empty to leave the model out")
        key = model_key(model)
        if key in scores and scores[key] != value:
            raise DataError(f"--performance {path} gives model {key} two scores ({scores[key]} and {value}): "
                            f"keep one row a model (e.g. one probe configuration a side)")
        scores[key] = value
    if not scores and empty:
        raise DataError(f"--performance {path}: every {score_column!r} of its {empty} model row(s) is empty; give a "
                        f"file with scores, or name the score column with --performance-score COLUMN")
    if not scores:
        raise DataError(f"--performance {path} has no row with both a {model_column} and a {score_column}")
    return PerformanceTable(path, scores)


class PerformanceTable(dict):
    """{model: score}, with the file it came from (for messages)."""

    def __init__(self, path, scores):
        super().__init__(scores)
        self.path = Path(path)


def join_performance(table, performance):
    """table.csv's rows with ``performance`` and ``performance_model``; DataError when no row's model is
    listed."""
    out = table.copy()
    scores, models = [], []
    for source, target in zip(out["source_side"], out["target_side"]):
        hit = None
        for side in (target, source):  # the target's model first
            if not is_missing(side) and model_key(side) in performance:
                hit = model_key(side)
                break
        models.append(hit or "")
        scores.append(performance[hit] if hit else float("nan"))
    if not any(models):
        listed = ", ".join(sorted(performance)[:5])
        sides = sorted({model_key(s) for c in ("source_side", "target_side") for s in out[c] if not is_missing(s)})
        raise DataError(f"--performance {getattr(performance, 'path', '')} has no model in common with the table "
                        f"(it lists {listed}{', ...' if len(performance) > 5 else ''}; the table's models: "
                        f"{', '.join(sides[:5])}{', ...' if len(sides) > 5 else ''}); give it the sides' model "
                        f"names, or name its model column with --performance-model")
    out["performance"], out["performance_model"] = scores, models
    return out


# ----------------------------------------------------------------------------------------------------------
# Correlations
# ----------------------------------------------------------------------------------------------------------

def no_correlation(frame, x, y):
    """Why columns x and y of ``frame`` give no correlation over the rows that have both, in words (fewer than
    3 such rows, or a column with one value), or None when they give one."""
    d = frame[[x, y]].apply(pd.to_numeric, errors="coerce").dropna() if {x, y} <= set(frame.columns) else []
    n = len(d)
    if n < 3:
        return f"no correlation: {n} configuration(s) have both {x} and {y}, 3 are needed"
    for col in (x, y):
        if d[col].nunique() < 2:
            return f"no correlation: {col} is {d[col].iloc[0]:.4g} in all {n} configurations"
    return None


def pearson(x, y):
    """Pearson's r along the last axis; nan where x or y is constant (no correlation)."""
    constant = (x.max(axis=-1) == x.min(axis=-1)) | (y.max(axis=-1) == y.min(axis=-1))
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    return np.where(constant, np.nan, np.clip(r, -1, 1))


def spearman(x, y):
    """Spearman's rho: Pearson's r of the ranks (ties share their average rank), along the last axis."""
    from scipy.stats import rankdata
    return pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


def correlate(x, y, resamples=RESAMPLES, seed=SEED):
    """{n, pearson, spearman, and their 95% bootstrap bounds} of two paired 1-D arrays."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    out = {"n": n, "pearson": float(pearson(x, y)), "spearman": float(spearman(x, y))}
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    lo_q, hi_q = (100 - CI) / 2, 100 - (100 - CI) / 2
    for name, f in (("pearson", pearson), ("spearman", spearman)):
        boot = f(x[idx], y[idx])
        boot = boot[np.isfinite(boot)]
        lo, hi = np.percentile(boot, [lo_q, hi_q]) if len(boot) >= resamples / 2 else (np.nan, np.nan)
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def correlation_table(table, xs, ys, resamples=RESAMPLES, seed=SEED):
    """One row per (x, y) with at least 3 configurations having both (see the module docstring)."""
    rows, why = [], {}
    for x in xs:
        for y in ys:
            if x not in table.columns or y not in table.columns:
                continue
            d = table[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(d) < 3:
                continue
            rows.append({"x": x, "y": y, **correlate(d[x].to_numpy(), d[y].to_numpy(), resamples, seed)})
            why[x, y] = no_correlation(d, x, y)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["why"] = why  # for format_correlations: why a row has no correlation (not a CSV column)
    return out


def format_correlations(corr):
    """Printable text: one line per (x, y)."""
    if corr.empty:
        return "correlations: no alignment metric and score share 3 or more configurations"

    def f(v):
        return f"{v:+.2f}"

    def interval(r, name):
        lo, hi = r[f"{name}_lo"], r[f"{name}_hi"]
        if np.isfinite(lo) and np.isfinite(hi):
            return f"[{f(lo)}, {f(hi)}]"
        return "[no interval: most resamples constant]"
    lines = [f"correlations over configurations (95% bootstrap intervals, {RESAMPLES} resamples, seed {SEED}):"]
    width = max(len(f"{x} ~ {y}") for x, y in zip(corr["x"], corr["y"]))
    for r in corr.to_dict("records"):
        head = f"  {(r['x'] + ' ~ ' + r['y']).ljust(width)}  n {r['n']:3d}  "
        if not (np.isfinite(r["pearson"]) and np.isfinite(r["spearman"])):  # a constant column (the only cause)
            lines.append(head + (corr.attrs.get("why", {}).get((r["x"], r["y"]))
                                 or f"no correlation: {r['x']} or {r['y']} is the same in every configuration"))
            continue
        lines.append(f"{head}pearson {f(r['pearson'])} {interval(r, 'pearson')}  spearman {f(r['spearman'])} "
                     f"{interval(r, 'spearman')}")
    return "\n".join(lines)

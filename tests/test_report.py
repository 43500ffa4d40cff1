"""src/report.py: table keying, correlations against plain numpy/scipy, the figure and the report files."""
import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from src import report
from src.errors import DataError, UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LITE = "efficientnet_lite0"


def result_row(method="qap", source="mpnet:text", target=f"{LITE}:img", acc=0.5, top_1=None,
               created="2024-05-01T10:00:00+00:00", task="captions", kernel_cka=0.3, **extra):
    """One averaged row as run.py writes it (top_1 = -1 for qap, which has no ranking)."""
    if top_1 is None:
        top_1 = -1 if method == "qap" else acc / 2
    row = {"Base data": "coco", "Query data": "nocaps", "Source model": source.split(":")[0],
           "Target model": target.split(":")[0], "method": method, "base_samples": 320,
           "query_samples": 500, "clustering_mode": 0, "stretch": False, "matching_acc": acc,
           "top_1": top_1, "top_5": top_1, "top_10": top_1, "task": task, "source_side": source,
           "target_side": target, "linear_cka": kernel_cka / 2, "kernel_cka": kernel_cka,
           "unbiased_cka": 0.1, "mutual_knn": 0.2, "cknna": 0.15, "restarts": 10, "device": "cpu",
           "seconds": 1.0, "created": created, "config": "abcd1234", "objective": 1.0, "data_dir": "data"}
    row.update(extra)
    return row


# ----------------------------------------------------------------------------------------------------------
# Table keying
# ----------------------------------------------------------------------------------------------------------

def test_two_methods_of_one_pair_make_one_row():
    table = report.build_table([result_row("qap", acc=0.6), result_row("linear", acc=0.3, top_1=0.2)])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["qap_acc"] == 0.6 and row["linear_acc"] == 0.3 and row["linear_top1"] == 0.2
    assert "qap_top1" not in table.columns  # qap has no ranking
    assert list(table.columns[:len(report.KEY_COLUMNS)]) == report.KEY_COLUMNS
    metric_cols = ["linear_cka", "kernel_cka", "unbiased_cka", "mutual_knn", "cknna"]
    assert list(table.columns) == report.KEY_COLUMNS + ["group"] + metric_cols + ["linear_acc", "linear_top1",
                                                                                   "qap_acc"]


def test_the_latest_run_wins():
    rows = [result_row("qap", acc=0.9, created="2024-05-02T00:00:00+00:00"),
            result_row("qap", acc=0.1, created="2024-05-01T00:00:00+00:00"),
            result_row("linear", acc=0.4, created="2024-05-01T00:00:00+00:00")]
    table = report.build_table(rows)
    assert len(table) == 1
    assert table.iloc[0]["qap_acc"] == 0.9 and table.iloc[0]["linear_acc"] == 0.4
    # the same with the order of the rows reversed: the time decides, not the order
    assert report.build_table(rows[::-1]).iloc[0]["qap_acc"] == 0.9


def test_tasks_and_languages_stay_apart():
    rows = [result_row(task="captions"), result_row(task="classes", image_acc=0.7),
            result_row(source="mpnet:text:de"), result_row(source="mpnet:text:en")]
    table = report.build_table(rows)
    assert len(table) == 4
    assert set(zip(table["task"], table["source_side"])) == {
        ("captions", "mpnet:text"), ("classes", "mpnet:text"), ("captions", "mpnet:text:de"),
        ("captions", "mpnet:text:en")}
    assert "qap_image_acc" in table.columns
    classes = table[table["task"] == "classes"].iloc[0]
    assert classes["qap_image_acc"] == 0.7
    assert table[table["task"] == "captions"]["qap_image_acc"].isna().all()


def test_old_rows_without_new_columns():
    old = {k: v for k, v in result_row("linear", acc=0.3).items()
           if k not in ("task", "source_side", "target_side", "unbiased_cka", "mutual_knn", "cknna")}
    table = report.build_table([old])
    row = table.iloc[0]
    assert row["task"] == "captions" and row["source_side"] == "mpnet" and row["target_side"] == LITE
    assert "cknna" not in table.columns and row["kernel_cka"] == 0.3


def test_metrics_and_nulls_come_from_the_group():
    rows = [result_row("qap", cknna=float("nan")), result_row("linear", cknna=0.42, cknna_null=0.01, cknna_z=9.0)]
    table = report.build_table(rows)
    assert table.iloc[0]["cknna"] == 0.42  # the first row that has a value
    assert table.iloc[0]["cknna_z"] == 9.0
    assert list(table.columns).index("cknna_z") < list(table.columns).index("linear_acc")


def test_rows_sorted_by_key():
    rows = [result_row(target=f"{LITE}@_blocks.11:img"),
            result_row(target=f"{LITE}@_blocks.3:img", base_samples=640),
            result_row(target=f"{LITE}@_blocks.3:img", base_samples=80),
            result_row(target=f"{LITE}@_blocks.1:img", base_samples=320)]
    table = report.build_table(rows)
    # sides in natural order, numbers as numbers
    assert list(table["target_side"]) == ([f"{LITE}@_blocks.1:img"] + [f"{LITE}@_blocks.3:img"] * 2
                                          + [f"{LITE}@_blocks.11:img"])
    assert list(table["base_samples"]) == [320, 80, 640, 320]


# ----------------------------------------------------------------------------------------------------------
# Correlations
# ----------------------------------------------------------------------------------------------------------

def test_correlations_against_plain_computation():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=8)
    y = x ** 3 + 0.1 * rng.normal(size=8)
    rows = [result_row(target=f"m{i}:img", kernel_cka=float(a), acc=float(b)) for i, (a, b) in enumerate(zip(x, y))]
    table = report.build_table(rows)
    r, rho = report.correlations(table, "kernel_cka", "qap")
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert rho == pytest.approx(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1], rel=1e-12)


def test_correlations_nan_when_too_few_or_constant():
    two = report.build_table([result_row(target=f"m{i}:img", kernel_cka=i, acc=i) for i in range(2)])
    assert all(math.isnan(v) for v in report.correlations(two, "kernel_cka", "qap"))
    flat = report.build_table([result_row(target=f"m{i}:img", kernel_cka=i, acc=0.5) for i in range(5)])
    assert all(math.isnan(v) for v in report.correlations(flat, "kernel_cka", "qap"))
    assert all(math.isnan(v) for v in report.correlations(flat, "kernel_cka", "linear"))


# ----------------------------------------------------------------------------------------------------------
# The figure
# ----------------------------------------------------------------------------------------------------------

def test_natural_layer_order():
    layers = ["final", "_blocks.11", None, "_blocks.3", "_blocks.1", "features.2.0", "_blocks.10.conv"]
    assert sorted(layers, key=report.natural_layer_key)[:4] == ["_blocks.1", "_blocks.3", "_blocks.10.conv",
                                                                "_blocks.11"]
    assert report.natural_layer_key("final") == report.natural_layer_key(None)
    assert report.natural_layer_key("_blocks.11") > report.natural_layer_key("_blocks.3")


def depth_rows():
    """One base model at several layers (given out of order) plus the controls, two methods."""
    sides = [(f"{LITE}@_blocks.1", 0.10, 0.05), (f"{LITE}@_blocks.11", 0.55, 0.40),
             (f"{LITE}@_blocks.3", 0.25, 0.15), (LITE, 0.60, 0.45),
             ("pixels", 0.05, 0.02), (f"random:{LITE}@_blocks.8", 0.08, 0.03)]
    rows = []
    for model, cka, acc in sides:
        rows.append(result_row("qap", target=f"{model}:img", kernel_cka=cka, acc=acc))
        rows.append(result_row("linear", target=f"{model}:img", kernel_cka=cka, acc=acc / 2))
    return rows


def test_depth_series_in_layer_order_and_controls_apart():
    table = report.build_table(depth_rows())
    assert report.varying_side(table) == "target_side"
    series = report.layer_series(table)
    assert len(series) == 1
    assert [table.at[i, "target_side"] for i in series[0]] == [
        f"{LITE}@_blocks.1:img", f"{LITE}@_blocks.3:img", f"{LITE}@_blocks.11:img", f"{LITE}:img"]
    assert report.is_control("pixels") and report.is_control(f"random:{LITE}@_blocks.8")
    assert not report.is_control(f"{LITE}@_blocks.8")
    assert report.short_label(f"{LITE}@_blocks.8") == "lite0@_blocks.8"
    assert report.short_label(f"random:{LITE}@_blocks.8") == "random:lite0@_blocks.8"
    assert report.short_label("hf:facebook/dinov2-small@encoder.layer.6") == "dinov2-small@encoder.layer.6"
    assert report.short_label("pixels") == "pixels"


def test_figure_is_a_png(tmp_path):
    table = report.build_table(depth_rows())
    path = tmp_path / "figure1_depth.png"
    corrs = report.draw_figure(table, path, x="kernel_cka", title="depth")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert set(corrs) == {"linear", "qap"}
    r, rho = corrs["qap"]
    assert r > 0.9 and rho == pytest.approx(1.0)


def test_figure_with_both_sides_varying_and_one_point(tmp_path):
    rows = [result_row(source="mpnet:text", target="dinov2:img"), result_row(source="minilm:text", target="vit:img")]
    report.draw_figure(report.build_table(rows), tmp_path / "f.png")
    report.draw_figure(report.build_table(rows[:1]), tmp_path / "g.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------

def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)


def test_read_results_skips_summary_table_and_broken_files(tmp_path, caplog):
    write_csv(tmp_path / "a.csv", [result_row("qap")])
    write_csv(tmp_path / "b.csv", [result_row("linear")])
    write_csv(tmp_path / "summary.csv", [result_row("qap")] * 3)
    write_csv(tmp_path / "table.csv", [{"x": 1}])
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with caplog.at_level(logging.WARNING, logger="src.report"):
        rows = report.read_results(tmp_path)
    assert sorted(r["method"] for r in rows) == ["linear", "qap"]
    skipped = " ".join(rec.getMessage() for rec in caplog.records)
    assert "empty.csv" in skipped and "binary.csv" in skipped and "other.csv" in skipped
    assert "summary.csv" not in skipped
    with pytest.raises(DataError):
        report.read_results(tmp_path / "missing")


def test_write_report(tmp_path):
    for i, row in enumerate(depth_rows()):
        write_csv(tmp_path / f"run{i}.csv", [row])
    table_path, figure_path, text = report.write_report(report.read_results(tmp_path), tmp_path)
    assert table_path == tmp_path / "table.csv" and figure_path == tmp_path / "figure1.png"
    assert figure_path.read_bytes()[:8] == PNG_MAGIC
    table = pd.read_csv(table_path)
    assert len(table) == 6 and {"qap_acc", "linear_acc", "linear_top1"} <= set(table.columns)
    assert "0.6000" in text and "qap: matching accuracy vs kernel_cka: pearson" in text
    # the table is not read back as a result, so a second report gives the same table
    report.write_report(report.read_results(tmp_path), tmp_path)
    assert pd.read_csv(table_path).equals(table)


def test_write_report_refusals(tmp_path):
    with pytest.raises(DataError):
        report.write_report([], tmp_path)
    with pytest.raises(UsageError, match="kernel_cka"):
        report.write_report([result_row()], tmp_path, x="svcca")
    assert list(tmp_path.iterdir()) == []

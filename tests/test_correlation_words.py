"""Correlations that cannot be computed are said in words (never `nan`), and performance tables that cannot be
read say why: a spreadsheet's `;` separator named, every score empty refused."""
import logging

import numpy as np
import pandas as pd
import pytest
from test_report import result_row

from src import correlations, report
from src.errors import DataError


def test_too_few_pairs_and_a_constant_column_are_said_in_words(tmp_path, caplog):
    two = report.build_table([result_row(target=f"m{i}:img", kernel_cka=i, acc=i) for i in range(2)])
    assert report.correlation_lines(two, "kernel_cka") == [
        "qap: matching accuracy vs kernel_cka: no correlation: 2 pair(s) have both kernel_cka and qap_acc, 3 are "
        "needed"]
    flat = report.build_table([result_row(target=f"m{i}:img", kernel_cka=i, acc=0.5) for i in range(5)])
    (line,) = report.correlation_lines(flat, "kernel_cka")
    assert line == "qap: matching accuracy vs kernel_cka: no correlation: qap_acc is 0.5 in all 5 pairs"
    with caplog.at_level(logging.INFO):
        report.draw_figure(two, tmp_path / "f.png")
    assert "nan" not in caplog.text and "no correlation: 2 configuration(s)" in caplog.text
    # a metric that varies gives its numbers, as before
    rising = report.build_table([result_row(target=f"m{i}:img", kernel_cka=i, acc=i / 10) for i in range(4)])
    assert report.correlation_lines(rising, "kernel_cka") == [
        "qap: matching accuracy vs kernel_cka: pearson 1.0000, spearman 1.0000 (4 pairs)"]


def test_correlations_table_says_which_column_is_constant():
    table = pd.DataFrame({"kernel_cka": [0.1, 0.2, 0.3, 0.4], "qap_acc": [0.5] * 4, "linear_acc": [0.1, 0.3, 0.2, 0.4]})
    corr = correlations.correlation_table(table, ["kernel_cka"], ["qap_acc", "linear_acc"], resamples=50)
    text = correlations.format_correlations(corr)
    assert "nan" not in text
    qap, linear = text.splitlines()[1:]
    assert qap.endswith("no correlation: qap_acc is 0.5 in all 4 configurations")
    assert "pearson +0.80" in linear   # np.corrcoef([.1,.2,.3,.4], [.1,.3,.2,.4]) = 0.8
    assert np.corrcoef(table["kernel_cka"], table["linear_acc"])[0, 1] == pytest.approx(0.8)


@pytest.mark.parametrize("text, needle", [
    ("model;score\nvis;0,5\ntxt;0,7\n", "has its columns separated by ';'"),
    ("model\tscore\nvis\t0.5\n", "has its columns separated by '\\t'"),
    ("model,score\nvis,\ntxt,\n", "every 'score' of its 2 model row(s) is empty"),
    ("model,score\nvis,nan\ntxt,NaN\n", "every 'score' of its 2 model row(s) is empty"),
    ("model,score\nvis,inf\n", "score 'inf' of 'vis' is not a finite number"),
])
def test_performance_tables_that_cannot_be_read_say_why(tmp_path, text, needle):
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(DataError) as e:
        correlations.read_performance(tmp_path / "p.csv")
    assert needle in str(e.value)

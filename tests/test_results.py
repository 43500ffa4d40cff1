"""Issue 29, results know their inputs (src/results.py): a result is finished only for the inputs on disk now,
and a run whose summary row could not be written leaves no CSV that would count as finished."""
import errno

import pandas as pd
import torch
from test_launch import PAIRS, configs_of

import run
from src import files, results
from src.files import read_sidecar, save_embeddings, side_file


def test_a_result_is_finished_only_for_the_inputs_on_disk_now(workdir, capsys):
    """Issue 29 #4: a side re-extracted (other rows, or the same rows from other captions) after its
    configurations finished: the launcher recomputes them instead of skipping them."""
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    cfgs = configs_of(PAIRS)
    assert all(results.finished(c) for c in cfgs)
    row = pd.read_csv(cfgs[0].output_paths()["results"], dtype=str).iloc[0]
    assert row["source_inputs"] == results.input_digests(cfgs[0])["source_inputs"] != ""
    path = side_file("data", "base", "txt:text")
    sidecar = read_sidecar(path)
    sidecar.captions = "edited.json"   # same rows, other captions file
    save_embeddings(torch.load(path), path, sidecar)
    stale = [c for c in cfgs if "txt" in (c.source.model, c.target.model)]
    assert stale and not any(results.finished(c) for c in stale)
    assert all(results.finished(c) for c in cfgs if c not in stale)
    capsys.readouterr()
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    out = capsys.readouterr()
    assert "inputs changed since" in out.err
    assert all(results.finished(c) for c in cfgs)


def test_the_query_files_and_cluster_picks_are_inputs_too(workdir):
    cfg = configs_of(PAIRS)[0]
    before = results.input_digests(cfg)
    torch.save(torch.load("data/query_txt_text.pt") * 2, "data/query_txt_text.pt")
    assert results.input_digests(cfg)["source_inputs"] != before["source_inputs"]
    c1 = configs_of(PAIRS[:-2] + ["--c", "1", "-q"])[0]
    before = results.input_digests(c1)
    torch.save(torch.arange(0, 40, 2), "data/base_txt_text_cluster.pt")
    assert results.input_digests(c1)["source_inputs"] != before["source_inputs"]


def test_a_summary_that_cannot_be_written_leaves_no_run_files(workdir, capsys, monkeypatch):
    """Issue 29 #3: summary.csv's rewrite fails in a run of several configurations: the configuration has no
    CSVs (not "finished"), and the stop message names only the ones that have their summary row."""
    real = files._stage
    calls = []

    def staged(path, write):
        if path.name == "summary.csv":
            calls.append(path)
            if len(calls) == 2:
                raise files.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, write)
    monkeypatch.setattr(files, "_stage", staged)
    assert run.main(PAIRS) == 1
    err = capsys.readouterr().err
    cfgs = configs_of(PAIRS)
    done = [c for c in cfgs if c.output_paths()["results"].exists()]
    assert len(done) == 1 and not cfgs[1].output_paths()["seedwise"].exists()
    assert "stopped after 1 of" in err and done[0].name() in err and cfgs[1].name() not in err
    assert [results.finished(c) for c in cfgs] == [True] + [False] * (len(cfgs) - 1)
    assert len(pd.read_csv("results/summary.csv")) == 1


def test_a_result_without_its_summary_row_is_not_finished(workdir, capsys):
    """A kill between the results file's move and summary.csv's: recomputed, not counted as done."""
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    cfg = configs_of(PAIRS)[0]
    summary = pd.read_csv("results/summary.csv", dtype=str, keep_default_na=False)
    summary[summary["config"] != cfg.key()].to_csv("results/summary.csv", index=False)
    assert not results.finished(cfg)
    assert "has no row of" in capsys.readouterr().err

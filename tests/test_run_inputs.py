"""run.py and cluster.py on unusual and bad input: sides, pairing by image id, output folders, cluster
files, summary.csv. Each bad input: one message, the right exit code, nothing written."""
import json

import pandas as pd
import torch
from test_run import ARGS, _bad

import cluster
import run
from src import experiment, results
from src.files import save_embeddings


def seedwise(root):
    frames = {f.name: pd.read_csv(f) for f in (root / "seedwise").glob("*.csv")}
    return frames


# ----------------------------------------------------------------------------------------------------------
# Output folders: checked before any computation, nothing left behind
# ----------------------------------------------------------------------------------------------------------

def test_results_dir_that_is_a_file(workdir, capsys):
    (workdir / "results").write_text("not a folder")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 2, "results is a file")
    assert not (workdir / "seedwise").exists()


def test_summary_csv_that_is_a_folder(workdir, capsys, monkeypatch):
    (workdir / "results" / "summary.csv").mkdir(parents=True)
    computed = []
    monkeypatch.setattr(experiment, "run_group", lambda *a, **k: computed.append(1))
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "summary.csv is not a file")
    assert not computed and not list((workdir / "seedwise").glob("*.csv"))


def test_results_dir_not_writable(workdir, capsys, monkeypatch):
    # root may write anywhere, so the permission is simulated where the check reads it
    real = results.os.access
    monkeypatch.setattr(results.os, "access",
                        lambda p, mode: False if str(p).endswith("results") else real(p, mode))
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "cannot write in results")
    assert not list((workdir / "seedwise").glob("*.csv"))


# ----------------------------------------------------------------------------------------------------------
# Flags that were accepted although wrong
# ----------------------------------------------------------------------------------------------------------

def test_negative_patience_and_one_anchor_kernel(workdir, capsys):
    _bad(workdir, capsys, ["--m", "qap", "--qap-patience", "-3"] + ARGS, 2, "--qap-patience -3")
    _bad(workdir, capsys, ["--m", "kernel_local_CKA"] + ARGS + ["--b", "1"], 2, "at least 2 anchors")


def test_every_configuration_is_validated(workdir, capsys):
    # the first configuration (linear) is fine; the qap one is not: nothing may run
    _bad(workdir, capsys, ["--m", "linear", "qap", "--qap-solver", "scipy", "--qap-init", "relative"] + ARGS, 2,
         "--qap-init relative")


def test_source_and_target_go_together(workdir, capsys):
    _bad(workdir, capsys, ["--source", "txt:text"] + ARGS[4:], 2, "--source and --target go together")
    _bad(workdir, capsys, ["--source", "txt:txt", "--target", "vis:img"] + ARGS[4:], 2, "txt:txt")


# ----------------------------------------------------------------------------------------------------------
# Embedding files
# ----------------------------------------------------------------------------------------------------------

def test_half_precision_embeddings_run(workdir):
    for stem in ("query_txt_text", "query_vis_img"):
        x = torch.load(workdir / "data" / f"{stem}.pt")
        torch.save(x.half().float(), workdir / "data" / f"{stem}.pt")
    assert run.main(["--m", "relative"] + ARGS) == 0
    (first,) = seedwise(workdir).values()
    for stem in ("query_txt_text", "query_vis_img"):
        torch.save(torch.load(workdir / "data" / f"{stem}.pt").half(), workdir / "data" / f"{stem}.pt")
    assert run.main(["--m", "relative"] + ARGS + ["--results-dir", "r2", "--seedwise-dir", "s2"]) == 0
    (second,) = [pd.read_csv(f) for f in (workdir / "s2").glob("*.csv")]
    pd.testing.assert_series_equal(first["matching_acc"], second["matching_acc"])


def test_tensor_shorter_than_its_sidecar(workdir, capsys):
    x = torch.load(workdir / "data" / "base_vis_img.pt")
    torch.save(x[:140].clone(), workdir / "data" / "base_vis_img.pt")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "base_vis_img.pt has 140 rows", "lists 150")


def _sidecar(workdir, stem, **changes):
    path = workdir / "data" / f"{stem}.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_ids_as_int_and_as_str_pair(workdir):
    assert run.main(["--m", "relative"] + ARGS) == 0
    (before,) = seedwise(workdir).values()
    _sidecar(workdir, "base_vis_img", image_ids=[str(i) for i in range(1, 151)])
    assert run.main(["--m", "relative"] + ARGS) == 0
    (after,) = seedwise(workdir).values()
    pd.testing.assert_series_equal(before["matching_acc"], after["matching_acc"])


def test_pairing_by_id_equals_aligned_files(workdir, tmp_path):
    """Image side missing 20 images and stored in another order: the run equals one on files that hold
    exactly the shared rows, aligned by hand (plain tensors, paired by position)."""
    text = torch.load(workdir / "data" / "base_txt_text.pt")
    img = torch.load(workdir / "data" / "base_vis_img.pt")
    g = torch.Generator().manual_seed(5)
    keep = torch.randperm(150, generator=g)[:130]              # ids keep + 1, in a shuffled order
    save_embeddings(img[keep], workdir / "data" / "base_vis_img.pt",
                    {"model": "vis", "image_ids": (keep + 1).tolist()})
    argv = ["--m", "linear_local_CKA", "--query_data", "base", "--b", "30", "--q", "40"]
    base = [a for a in ARGS if a not in ("--query_data", "query")]
    assert run.main(base + argv) == 0
    (paired,) = seedwise(workdir).values()

    shared = torch.sort(keep).values                           # ascending id order
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    torch.save(text[shared].clone(), aligned / "base_txt_text.pt")
    torch.save(img[shared].clone(), aligned / "base_vis_img.pt")
    assert run.main(base + argv + ["--data-dir", str(aligned), "--seedwise-dir", "s2", "--results-dir", "r2"]) == 0
    (plain,) = [pd.read_csv(f) for f in (workdir / "s2").glob("*.csv")]
    for c in ("matching_acc", "top_1", "top_5", "linear_cka", "kernel_cka"):
        assert paired[c].tolist() == plain[c].tolist(), c


def test_two_data_folders_do_not_overwrite_each_other(workdir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for stem in ("base_txt_text", "base_vis_img", "query_txt_text", "query_vis_img"):
        torch.save(torch.load(workdir / "data" / f"{stem}.pt") * 2, other / f"{stem}.pt")
    assert run.main(["--m", "linear"] + ARGS) == 0
    assert run.main(["--m", "linear"] + ARGS + ["--data-dir", str(other)]) == 0
    frames = seedwise(workdir)
    assert len(frames) == 2
    assert sorted(f["data_dir"][0] for f in frames.values()) == sorted(["data", str(other)])


# ----------------------------------------------------------------------------------------------------------
# Cluster files
# ----------------------------------------------------------------------------------------------------------

def test_duplicate_cluster_indices(workdir, capsys):
    torch.save(torch.tensor([0, 2, 2, 4]), workdir / "data" / "base_vis_img_cluster.pt")
    _bad(workdir, capsys, ["--m", "linear", "--c", "2"] + ARGS, 1, "base_vis_img_cluster.pt", "more than once")


def test_cluster_file_of_other_embeddings(workdir, capsys):
    assert cluster.main(["--m", "vis", "--d", "base", "--nc", "30", "-q"]) == 0
    assert run.main(["--m", "linear", "--c", "2"] + ARGS) == 0
    x = torch.load(workdir / "data" / "base_vis_img.pt")
    save_embeddings(x + 0.01, workdir / "data" / "base_vis_img.pt", {"model": "vis", "image_ids": list(range(1, 151))})
    _bad(workdir, capsys, ["--m", "linear", "--c", "2"] + ARGS, 1, "made from other embeddings",
         "python cluster.py --m vis --d base --nc 30")


def test_cluster_text_only_model_without_t(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cluster.main(["--m", "minilm", "--d", "toy"]) == 2
    assert "text-only model: add -t" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# summary.csv stays readable when the columns change
# ----------------------------------------------------------------------------------------------------------

def test_summary_readable_after_a_new_column(workdir):
    assert run.main(["--m", "linear"] + ARGS) == 0
    assert run.main(["--m", "relative", "--permutations", "2"] + ARGS) == 0
    assert run.main(["--m", "linear"] + ARGS) == 0
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    assert len(summary) == 3 and "kernel_cka_z" in summary.columns
    assert summary["kernel_cka_z"].isna().tolist() == [True, False, True]
    assert summary["method"].tolist() == ["linear", "relative", "linear"]


# ----------------------------------------------------------------------------------------------------------
# Flags that were silently ignored or gave wrong numbers (found by trying the scripts as a new user)
# ----------------------------------------------------------------------------------------------------------

def test_flags_that_would_be_ignored_or_give_wrong_numbers(workdir, capsys):
    sides = ["--source", "txt:text", "--target", "vis:img"] + ARGS[4:]
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--results-dir", "out", "--seedwise-dir", "out"], 2,
         "both out")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--seeds", "0", "0", "1"], 2, "distinct seeds")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--seeds", "-1"], 2, "--seeds -1")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--permutations", "1"], 2, "--permutations 1")
    _bad(workdir, capsys, ["--demo", "--m", "qap"], 2, "--demo sets its own", "--m")
    _bad(workdir, capsys, ["--m", "linear", "--vid_model", "other"] + sides, 2, "drop --vid_model")
    _bad(workdir, capsys, ["--m", "linear", "--source", "txt:text", "--target", "txt@final:text"] + ARGS[4:], 2,
         "both a source and a target")
    _bad(workdir, capsys, ["--report", "--figure", "sub/fig.png"], 2, "give a file name")


def test_report_says_where_it_wrote(workdir, capsys):
    assert run.main(["--m", "linear", "--vid_model", "vis", "clipx", "--text_model", "txt"] + ARGS[4:]) == 0
    capsys.readouterr()
    assert run.main(["--report", "--figure", "f.png"]) == 0
    out = capsys.readouterr().out
    assert "wrote results/table.csv" in out and "wrote results/f.png" in out
    assert (workdir / "results" / "f.png").read_bytes()[:4] == b"\x89PNG"

"""run.py end to end on small generated embeddings, through main([...])."""
import json
import multiprocessing as mp

import pandas as pd
import pytest
import torch

import run
from conftest import make_pair
from src.blind_methods import BLIND_METHODS
from src.metrics import METRICS
from src.results import append_summary, result_columns, seedwise_columns

PAPER_SEEDWISE = ["Base data", "Query data", "Source model", "Target model", "method", "base_samples",
                  "query_samples", "clustering_mode", "stretch", "seed1", "seed2", "matching_acc", "top_1",
                  "top_5", "top_10"]
# after the paper's columns: one a metric of the registry, then the run's own
NEW = [*METRICS, "restarts", "device", "seconds", "created", "config", "objective", "task", "source_side",
       "target_side", "source_modality", "source_lang", "target_modality", "target_lang", "data_dir", "group",
       "method_options", "seeds", "base_seed", "permutations", "source_inputs", "target_inputs"]


ARGS = ["--vid_model", "vis", "--text_model", "txt", "--base_data", "base", "--query_data", "query",
        "--b", "30", "--q", "40", "--restarts", "3", "-q"]


def outputs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def test_qap_options_end_to_end(workdir):
    for extra in (["--qap-solver", "scipy"], ["--qap-init", "kernel_local_CKA"], ["--qap-polish"],
                  ["--qap-init", "barycenter"]):
        assert run.main(["--m", "qap"] + ARGS + extra) == 0, extra
    frames = [pd.read_csv(f) for f in (workdir / "seedwise").glob("*.csv")]
    assert len(frames) == 4 and all(f["matching_acc"].between(0, 1).all() for f in frames)


@pytest.mark.parametrize("method", sorted(set(run.METHODS) - set(BLIND_METHODS)))  # those: test_blind.py
def test_every_method_end_to_end(workdir, method, capsys):
    extra = ["--text_model", "clipx", "--vid_model", "clipx"] if method == "cos" else []  # cos needs one shared space
    assert run.main(["--m", method] + ARGS + extra) == 0
    out = capsys.readouterr().out
    seedwise = list((workdir / "seedwise").glob("*.csv"))
    results = list((workdir / "results").glob("*.csv"))
    assert len(seedwise) == 1 and len(results) == 2  # results/<name>.csv and results/summary.csv
    sw = pd.read_csv(seedwise[0])
    assert list(sw.columns) == PAPER_SEEDWISE + NEW == seedwise_columns()
    assert sw["seed2"].tolist() == [0, 1, 2] and (sw["method"] == method).all()
    assert sw["matching_acc"].between(0, 1).all()
    if method == "qap":
        assert (sw[["top_1", "top_5", "top_10"]] == -1).all().all()
        assert (sw["restarts"] >= 1).all() and sw["objective"].notna().all()
    else:
        assert (sw["top_1"] <= sw["top_5"]).all() and (sw["top_5"] <= sw["top_10"]).all()
    assert sw["linear_cka"].between(0, 1).all() and sw["kernel_cka"].between(0, 1).all()
    avg = pd.read_csv(workdir / "results" / seedwise[0].name)
    assert list(avg.columns) == result_columns()
    assert avg["matching_acc"][0] == pytest.approx(sw["matching_acc"].mean())
    assert str(seedwise[0].relative_to(workdir)) in out and "matching accuracy" in out


def test_same_seeds_same_numbers_and_rerun_replaces(workdir):
    assert run.main(["--m", "kernel_local_CKA"] + ARGS) == 0
    (sw,) = list((workdir / "seedwise").glob("*.csv"))
    first = pd.read_csv(sw)
    assert run.main(["--m", "kernel_local_CKA"] + ARGS) == 0
    second = pd.read_csv(sw)
    cols = ["matching_acc", "top_1", "top_5", "top_10", "linear_cka", "kernel_cka"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    assert len(list((workdir / "seedwise").glob("*.csv"))) == 1          # replaced, not duplicated
    assert len(pd.read_csv(workdir / "results" / "summary.csv")) == 2     # one row per finished run
    assert run.main(["--m", "kernel_local_CKA"] + ARGS + ["--seeds", "5"]) == 0
    assert len(list((workdir / "seedwise").glob("*.csv"))) == 2          # another configuration, another name


def test_paper_flags_and_readable_aliases_agree(workdir):
    assert run.main(["--m", "linear"] + ARGS) == 0
    long = ["--method", "linear", "--vision-model", "vis", "--text-model", "txt", "--base-data", "base",
            "--query-data", "query", "--base-samples", "30", "--query-samples", "40", "--clustering-mode", "0",
            "--device", "cpu", "--quiet"]
    assert run.main(long) == 0
    assert len(list((workdir / "seedwise").glob("*.csv"))) == 1


def _expected_linear_acc(data, source, target, seed):
    """The paper's definitions, written out: anchors/queries, least squares source -> target, Hungarian."""
    from src import utils
    sb, tb, sq, tq = utils.get_data_sep(0, seed, 30, 40, data["base"][source], data["base"][target],
                                        data["query"][source], data["query"][target], None, None, 0, False)
    return utils.linear_matching(sb, tb, sq, tq, utils.linear_baseline(sb, tb, sq, tq))


def test_vision_to_language_swaps_roles(workdir):
    assert run.main(["--m", "linear"] + ARGS) == 0
    assert run.main(["--m", "linear", "-vtl"] + ARGS) == 0
    frames = {f.name: pd.read_csv(f) for f in (workdir / "seedwise").glob("*.csv")}
    (vtl_name,) = [n for n in frames if "_vtl_" in n]
    (tl_name,) = [n for n in frames if "_vtl_" not in n]
    vtl, tl = frames[vtl_name], frames[tl_name]
    assert (vtl["Source model"] == "vis").all() and (vtl["Target model"] == "txt").all()
    assert (tl["Source model"] == "txt").all() and (tl["Target model"] == "vis").all()
    assert (vtl["source_side"] == "vis:img").all() and (tl["source_side"] == "txt:text").all()
    # the least-squares map is not symmetric: each run must have mapped its own source onto its target
    data = {d: {"text": torch.load(workdir / "data" / f"{d}_txt_text.pt"),
                "img": torch.load(workdir / "data" / f"{d}_vis_img.pt")} for d in ("base", "query")}
    for seed in (0, 1, 2):
        assert tl["matching_acc"][seed] == _expected_linear_acc(data, "text", "img", seed)
        assert vtl["matching_acc"][seed] == _expected_linear_acc(data, "img", "text", seed)
    assert tl["matching_acc"].tolist() != vtl["matching_acc"].tolist()
    assert vtl["linear_cka"].tolist() == pytest.approx(tl["linear_cka"].tolist())


def test_vtl_graph_is_the_transpose():
    from src import utils
    text, img = make_pair(100, 3)
    a = utils.linear_local_CKA(text[:40], img[:40], text[40:], img[40:])
    b = utils.linear_local_CKA(img[:40], text[:40], img[40:], text[40:])
    assert torch.allclose(a, b.T, atol=1e-6)


@pytest.mark.parametrize("mode, expected", [(1, list(range(0, 60, 2))), (2, list(range(1, 61, 2)))])
def test_cluster_modes_read_the_cluster_files(workdir, mode, expected, monkeypatch):
    from src import tasks
    seen = {}
    real = tasks.get_data_sep

    def spy(*a):
        seen["cluster"] = a[8] if mode == 1 else a[9]
        return real(*a)

    monkeypatch.setattr(tasks, "get_data_sep", spy)
    assert run.main(["--m", "linear", "--c", str(mode)] + ARGS) == 0
    assert seen["cluster"].tolist() == expected


def test_cluster_files_only_needed_for_cluster_modes(workdir):
    for f in (workdir / "data").glob("*_cluster.pt"):
        f.unlink()
    assert run.main(["--m", "linear"] + ARGS) == 0


# ----------------------------------------------------------------------------------------------------------
# Bad input: one message, the right exit code, nothing written
# ----------------------------------------------------------------------------------------------------------

def _bad(workdir, capsys, argv, code, *needles):
    before = outputs(workdir)
    assert run.main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert outputs(workdir) == before


def test_missing_embeddings(workdir, capsys):
    (workdir / "data" / "query_vis_img.pt").unlink()
    # vis is no model get_embeds.py knows: the hint says so instead of naming a command that would be refused
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "query_vis_img.pt", "vis is not a model get_embeds.py knows")


def test_missing_cluster_file(workdir, capsys):
    (workdir / "data" / "base_vis_img_cluster.pt").unlink()
    _bad(workdir, capsys, ["--m", "linear", "--c", "2"] + ARGS, 1, "base_vis_img_cluster.pt",
         "python cluster.py --m vis --d base --nc 30")


def test_row_count_mismatch(workdir, capsys):
    torch.save(torch.randn(80, 20), workdir / "data" / "query_vis_img.pt")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "90 rows", "80")


def test_sidecars_with_other_images(workdir, capsys):
    side = workdir / "data" / "base_vis_img.json"
    meta = json.loads(side.read_text())
    meta["image_ids"] = list(range(1000, 1150))
    side.write_text(json.dumps(meta))
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "share no image id", "base_vis_img.pt")


def test_too_many_anchors_and_queries(workdir, capsys):
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--q", "95"], 1, "95 queries", "90 rows")
    same = ARGS + ["--query_data", "base", "--b", "100", "--q", "60"]
    _bad(workdir, capsys, ["--m", "linear"] + same, 1, "100 anchors + 60 queries = 160", "only 150")


def test_nan_rows(workdir, capsys):
    x = torch.load(workdir / "data" / "query_txt_text.pt")
    x[7, 3] = float("nan")
    torch.save(x, workdir / "data" / "query_txt_text.pt")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "query_txt_text.pt", "NaN or inf", "[7]")


def test_corrupt_and_pickled_files(workdir, capsys):
    (workdir / "data" / "query_txt_text.pt").write_bytes(b"not a torch file")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "query_txt_text.pt", "is truncated or corrupt")
    torch.save({"weights": object()}, workdir / "data" / "query_txt_text.pt")  # refused by weights_only
    _bad(workdir, capsys, ["--m", "linear"] + ARGS, 1, "query_txt_text.pt", "holds pickled Python objects")


def test_unknown_method_and_bad_flags(workdir, capsys):
    _bad(workdir, capsys, ["--m", "nope"] + ARGS, 2, "invalid choice: 'nope'")
    _bad(workdir, capsys, ["--m", "qap", "--qap-solver", "nope"] + ARGS, 2, "--qap-solver")
    _bad(workdir, capsys, ["--m", "qap", "--qap-init", "nope"] + ARGS, 2, "--qap-init")
    _bad(workdir, capsys, ["--m", "qap", "--qap-solver", "scipy", "--qap-init", "relative"] + ARGS, 2,
         "--qap-init relative needs --qap-solver fast")
    _bad(workdir, capsys, ["--m", "qap", "--qap-solver", "scipy", "--qap-polish"] + ARGS, 2,
         "--qap-polish needs --qap-solver fast")
    if not torch.cuda.is_available():
        _bad(workdir, capsys, ["--m", "linear", "--device", "cuda:7"] + ARGS, 2, "--device cuda:7")


def test_cos_needs_one_space(workdir, capsys):
    _bad(workdir, capsys, ["--m", "cos"] + ARGS, 1, "12 dimensions", "20")


# ----------------------------------------------------------------------------------------------------------
# summary.csv under concurrent appends
# ----------------------------------------------------------------------------------------------------------

def _append_many(args):
    path, k = args
    row = {c: k for c in result_columns()}
    for i in range(40):
        row["seconds"] = i
        append_summary(path, row)


def test_concurrent_summary_appends_lose_no_row(tmp_path):
    path = tmp_path / "results" / "summary.csv"
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(path, k) for k in range(4)])
    df = pd.read_csv(path)
    assert list(df.columns) == result_columns()
    assert len(df) == 160 and sorted(df["method"].value_counts().tolist()) == [40] * 4


def test_run_py_is_a_thin_script():
    # its checks, configurations, demos and branches live in src/run_cli.py and src/demo.py
    from pathlib import Path
    root = Path(run.__file__).resolve().parent
    lines = {s: len((root / s).read_text().splitlines()) for s in ("run.py", "get_embeds.py")}
    assert lines["run.py"] <= lines["get_embeds.py"], lines

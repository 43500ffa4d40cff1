"""Alignment under control, end to end on small generated embeddings: perturbed sides in run.py, the probe
task, and --report's correlations and performance join. Every bad input: one message, its exit code, nothing
written."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from test_run import _bad

import cluster
import run
from src import correlations, perturb, utils
from src.draws import get_data_sep
from src.files import save_embeddings
from src.metrics import METRICS

SIDES = ["--base_data", "base", "--query_data", "query", "--b", "30", "--q", "40", "--restarts", "3", "-q"]
VALUES = ["matching_acc", "top_1", "top_5", "top_10", *METRICS, "objective"]


def seedwise(root):
    return pd.concat([pd.read_csv(f) for f in sorted((root / "seedwise").glob("*.csv"))], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------
# Row perturbations in run.py
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [k.name for k in perturb.kinds(perturb.ROWS)])
def test_level_zero_gives_the_unperturbed_numbers_as_its_own_configuration(workdir, kind):
    side = f"txt:text~{perturb.Perturbation(kind, perturb.KINDS[kind].low).text}"
    assert run.main(["--source", "txt:text", side, "--target", "vis:img", "--m", "linear", "qap"] + SIDES) == 0
    sw = seedwise(workdir)
    for method in ("linear", "qap"):
        plain = sw[(sw["source_side"] == "txt:text") & (sw["method"] == method)].reset_index(drop=True)
        zero = sw[(sw["source_side"] == side) & (sw["method"] == method)].reset_index(drop=True)
        assert len(plain) == len(zero) == 3
        pd.testing.assert_frame_equal(plain[VALUES], zero[VALUES])      # identical, not close
        assert plain["config"][0] != zero["config"][0]                  # its own name and hash
    table = pd.read_csv(workdir / "results" / "table.csv")
    assert sorted(table["source_side"]) == sorted(["txt:text", side])   # its own row


@pytest.mark.parametrize("query_data", ["base", "query"])
def test_row_perturbation_is_the_paired_pool_before_each_draw(workdir, query_data):
    # anchors and queries alike: one pool when they come from one dataset, each pool on its own otherwise
    args = ["--source", "txt:text~swap:0.5", "--target", "vis:img", "--m", "linear", "--base_data", "base",
            "--query_data", query_data, "--b", "30", "--q", "40", "--seeds", "0", "4", "-q"]
    assert run.main(args) == 0
    sw = seedwise(workdir)
    load = {name: torch.load(workdir / "data" / f"{name}.pt", weights_only=True)
            for name in ("base_txt_text", "base_vis_img", "query_txt_text", "query_vis_img")}
    for row, seed in enumerate((0, 4)):
        sb = perturb.perturb_rows(load["base_txt_text"], "swap:0.5", perturb.rng(seed, 0, 0))
        same = query_data == "base"
        sq = sb if same else perturb.perturb_rows(load["query_txt_text"], "swap:0.5", perturb.rng(seed, 0, 1))
        tq = load["base_vis_img"] if same else load["query_vis_img"]
        a, b, c, d = get_data_sep(0, seed, 30, 40, sb, load["base_vis_img"], sq, tq, None, None, 0, same)
        X, Y = torch.cat([a, c]).double(), torch.cat([b, d]).double()
        assert sw["kernel_cka"][row] == pytest.approx(float(utils.kernel_CKA(X, Y)), abs=1e-12)
        assert sw["linear_cka"][row] == pytest.approx(float(utils.linear_CKA(X, Y)), abs=1e-12)


def test_a_sweep_falls_with_the_level(workdir):
    levels = ["0", "0.25", "0.5", "1"]
    assert run.main(["--source"] + [f"txt:text~swap:{p}" for p in levels] + ["--target", "vis:img", "--m",
                                                                              "relative"] + SIDES) == 0
    table = pd.read_csv(workdir / "results" / "table.csv").set_index("source_side")
    cka = [table.loc[f"txt:text~swap:{p}", "kernel_cka"] for p in levels]
    assert cka == sorted(cka, reverse=True) and cka[0] > 2 * cka[-1]


def test_input_perturbed_side_reads_its_own_file_and_its_cluster_file(workdir, capsys):
    text = torch.load(workdir / "data" / "base_txt_text.pt", weights_only=True)
    ids = list(range(1, 151))
    save_embeddings(text.flip(1), workdir / "data" / "base_txt_text~drop~0.5.pt",
                    {"model": "txt", "image_ids": ids, "perturbation": {"kind": "drop", "level": 0.5, "seed": 0}})
    assert cluster.main(["--m", "txt", "--d", "base", "-t", "--nc", "30", "--perturb", "drop:0.5", "-q"]) == 0
    assert (workdir / "data" / "base_txt_text~drop~0.5_cluster.pt").is_file()
    assert run.main(["--source", "txt:text~drop:0.5", "--target", "vis:img", "--m", "linear", "--c", "1",
                     "--base_data", "base", "--query_data", "base", "--b", "30", "--q", "40", "-q"]) == 0
    sw = seedwise(workdir)
    assert (sw["source_side"] == "txt:text~drop:0.5").all() and (sw["clustering_mode"] == 1).all()


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, target, needle", [
    ("txt:text~flip:0.5", "vis:img", "unknown kind 'flip'"),
    ("txt:text~swap:1.5", "vis:img", "p in [0, 1]"),
    ("txt:text~mix:-0.2", "vis:img", "u in [0, 1]"),
    ("txt:text~noise:-1", "vis:img", "s >= 0"),
    ("txt:text~drop:2", "vis:img", "p in [0, 1]"),
    ("txt:text", "vis:img~blur:-1", "sigma >= 0"),
    ("txt:text", "vis:img~patches:0", "k >= 1"),
    ("txt:text", "vis:img~drop:0.5", "needs a MODEL:text side"),
])
def test_bad_perturbation_exits_2(workdir, capsys, source, target, needle):
    _bad(workdir, capsys, ["--source", source, "--target", target, "--m", "linear"] + SIDES, 2, needle)


def test_input_perturbation_without_its_file_names_the_command(workdir, capsys):
    # a model get_embeds.py knows (for one it does not, the message says where to put the file instead)
    _bad(workdir, capsys, ["--source", "minilm:text~shuffle:0.25", "--target", "vis:img", "--m", "linear"] + SIDES,
         1, "base_minilm_text~shuffle~0.25.pt does not exist",
         "python get_embeds.py --m minilm --d base --images DIR --captions FILE --perturb shuffle:0.25")


def test_input_perturbation_file_of_another_level_is_refused(workdir, capsys):
    text = torch.load(workdir / "data" / "base_txt_text.pt", weights_only=True)
    save_embeddings(text, workdir / "data" / "base_txt_text~drop~0.5.pt",
                    {"model": "txt", "image_ids": list(range(1, 151)),
                     "perturbation": {"kind": "drop", "level": 0.25, "seed": 0}})
    _bad(workdir, capsys, ["--source", "txt:text~drop:0.5", "--target", "vis:img", "--m", "linear"] + SIDES, 1,
         "its sidecar records drop:0.25")


def test_row_perturbation_of_a_class_task_exits_2(workdir, capsys):
    _bad(workdir, capsys, ["--task", "classes", "--source", "txt:text~swap:0.5", "--target", "vis:img",
                           "--base_data", "base", "--query_data", "base", "--b", "4", "-q"], 2,
         "row perturbation")


# ----------------------------------------------------------------------------------------------------------
# The probe
# ----------------------------------------------------------------------------------------------------------

C, PER, D = 6, 10, 8


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A classification dataset: 6 classes x 10 rows, two image sides and a class-name text side."""
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(C).repeat_interleave(PER)
    centres = torch.randn(C, D, generator=g)
    X = centres[labels] + 1.2 * torch.randn(len(labels), D, generator=g)
    meta = {"classes": [f"c{c}" for c in range(C)], "labels": labels.tolist(),
            "image_ids": [f"c{c}/{i}.jpg" for i, c in enumerate(labels.tolist())]}
    save_embeddings(X, tmp_path / "data" / "toy_vis_img.pt", {"model": "vis", **meta})
    save_embeddings(X[:, :3] ** 2, tmp_path / "data" / "toy_pix_img.pt", {"model": "pix", **meta})
    save_embeddings(centres, tmp_path / "data" / "toy_txt_text.pt",
                    {"model": "txt", "classes": meta["classes"], "image_ids": None, "templates": ["a {}."]})
    return tmp_path, X, labels


def test_probe_equals_a_scikit_learn_pipeline(toy):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    root, X, labels = toy
    assert run.main(["--task", "probe", "--target", "vis:img", "pix:img", "vis:img~noise:0", "vis:img~noise:3",
                     "--base_data", "toy", "--seeds", "0", "7", "-q"]) == 0
    sw = seedwise(root)
    for side, rows in (("vis:img", X), ("pix:img", X[:, :3] ** 2)):
        got = sw[sw["target_side"] == side].set_index("seed2")["probe_acc"]
        for seed in (0, 7):
            pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            cv = StratifiedKFold(5, shuffle=True, random_state=seed)
            want = cross_val_score(pipe, rows.double().numpy(), labels.numpy(), cv=cv).mean()
            assert got[seed] == pytest.approx(want, abs=1e-12), (side, seed)
    by = sw.groupby("target_side")["probe_acc"].mean()
    assert by["vis:img~noise:0"] == by["vis:img"] and by["vis:img~noise:3"] < by["vis:img"]
    assert sw["method"].isna().all() and sw["matching_acc"].isna().all() and sw["kernel_cka"].isna().all()
    table = pd.read_csv(root / "results" / "table.csv")
    assert len(table) == 4 and "probe_acc" in table and not any(c.endswith("probe_probe_acc") for c in table)


@pytest.mark.parametrize("extra, code, needle", [
    (["--source", "pix:img"], 2, "takes one side"),
    (["--m", "qap"], 2, "runs no matching method"),
    (["--restarts", "5"], 2, "method options"),
    (["-str"], 2, "drop -str"),
    (["--permutations", "20"], 2, "drop --permutations"),
])
def test_probe_refuses_what_does_not_apply(toy, capsys, extra, code, needle):
    root, _, _ = toy
    _bad(root, capsys, ["--task", "probe", "--target", "vis:img", "--base_data", "toy", "-q"] + extra, code, needle)


def test_probe_needs_labels_and_five_rows_a_class(toy, capsys):
    root, X, labels = toy
    _bad(root, capsys, ["--task", "probe", "--target", "txt:text", "--base_data", "toy", "-q"], 1,
         "no per-row class labels")
    keep = torch.cat([torch.arange(4), torch.arange(PER, len(labels))])   # class 0 keeps 4 rows
    save_embeddings(X[keep], root / "data" / "few_vis_img.pt",
                    {"model": "vis", "classes": [f"c{c}" for c in range(C)], "labels": labels[keep].tolist(),
                     "image_ids": [str(i) for i in keep.tolist()]})
    _bad(root, capsys, ["--task", "probe", "--target", "vis:img", "--base_data", "few", "-q"], 1,
         "only 4 row(s)")


def test_probe_accepts_and_ignores_b_q_c(toy):
    root, _, _ = toy
    assert run.main(["--task", "probe", "--target", "vis:img", "--base_data", "toy", "--seeds", "0", "-q"]) == 0
    first = seedwise(root)
    assert run.main(["--task", "probe", "--target", "vis:img", "--base_data", "toy", "--seeds", "0", "--b", "7",
                     "--q", "9", "--c", "1", "-q"]) == 0
    again = seedwise(root)
    assert len(again) == 1 and again["probe_acc"][0] == first["probe_acc"][0]  # one configuration, replaced


# ----------------------------------------------------------------------------------------------------------
# --report: correlations and a joined performance table
# ----------------------------------------------------------------------------------------------------------

def _sweep(workdir):
    sources = [f"txt:text~swap:{p}" for p in ("0", "0.25", "0.5", "0.75", "1")] + ["txt:text~noise:2"]
    assert run.main(["--source"] + sources + ["--target", "vis:img", "clipx:img", "--m", "linear", "relative",
                                              "--base_data", "base", "--query_data", "base", "--b", "30", "--q",
                                              "40", "-q"]) == 0


def test_report_correlations_equal_scipy_and_the_join_takes_either_side(workdir, capsys):
    _sweep(workdir)
    perf = workdir / "perf.csv"
    pd.DataFrame({"name": ["vis", "clipx", "txt", "other"], "top1": [0.8, 0.5, 0.3, 0.9]}).to_csv(perf, index=False)
    capsys.readouterr()
    assert run.main(["--report", "--performance", str(perf), "--performance-model", "name",
                     "--performance-score", "top1"]) == 0
    out = capsys.readouterr().out
    assert "correlations over configurations" in out and "wrote results/correlations.csv" in out
    table = pd.read_csv(workdir / "results" / "table.csv")
    corr = pd.read_csv(workdir / "results" / "correlations.csv")
    # the target's model first: every row has one of the image models
    assert dict(zip(table["target_side"], table["performance_model"])) == {"vis:img": "vis", "clipx:img": "clipx"}
    assert set(corr["y"]) == {"linear_acc", "relative_acc", "performance"}
    assert set(corr["x"]) == set(METRICS)
    for r in corr.to_dict("records"):
        d = table[[r["x"], r["y"]]].dropna()
        assert r["n"] == len(d) == 12
        assert r["pearson"] == pytest.approx(stats.pearsonr(d[r["x"]], d[r["y"]])[0], abs=1e-12)
        assert r["spearman"] == pytest.approx(stats.spearmanr(d[r["x"]], d[r["y"]])[0], abs=1e-12)
        for m in ("pearson", "spearman"):
            assert r[f"{m}_lo"] <= r[m] <= r[f"{m}_hi"], r
    assert (workdir / "results" / "perturbation.png").is_file()
    assert (workdir / "results" / "performance.png").is_file()


def test_spearman_with_ties_and_the_seeded_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 30).astype(float)          # many ties
    y = x + rng.normal(0, 2, 30)
    got = correlations.correlate(x, y, resamples=500, seed=3)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert got == correlations.correlate(x, y, resamples=500, seed=3)           # seeded
    other = correlations.correlate(x, y, resamples=500, seed=4)
    assert (other["pearson_lo"], other["pearson_hi"]) != (got["pearson_lo"], got["pearson_hi"])
    # the interval is the percentiles of the correlations of resampled rows, written out
    idx = np.random.default_rng(3).integers(0, 30, size=(500, 30))
    boot = [stats.pearsonr(x[i], y[i])[0] for i in idx]
    assert got["pearson_lo"] == pytest.approx(np.percentile(boot, 2.5), abs=1e-12)
    assert got["pearson_hi"] == pytest.approx(np.percentile(boot, 97.5), abs=1e-12)
    assert np.isnan(correlations.correlate(np.ones(5), np.arange(5.0))["pearson"])  # constant: no correlation


@pytest.mark.parametrize("csv, flags, code, needle", [
    ("model,acc\nvis,0.5\n", [], 1, "has no column 'score'"),
    ("model,score\nvis,0.5\n", ["--performance-model", "name"], 1, "has no column 'name'"),
    ("model,score\nresnet,0.5\nvit,0.7\n", [], 1, "no model in common"),
    ("model,score\nvis,0.5\nvis,0.6\n", [], 1, "two scores"),
    ("model,score\nvis,high\n", [], 1, "is not a number"),
])
def test_bad_performance_table(workdir, capsys, csv, flags, code, needle):
    assert run.main(["--source", "txt:text", "--target", "vis:img", "--m", "linear"] + SIDES) == 0
    (workdir / "perf.txt").write_text(csv)
    _bad(workdir, capsys, ["--report", "--performance", "perf.txt"] + flags, code, needle)
    assert not (workdir / "results" / "table.csv").exists()


def test_performance_flags_need_their_partners(workdir, capsys):
    _bad(workdir, capsys, ["--source", "txt:text", "--target", "vis:img", "--performance", "p.csv"] + SIDES, 2,
         "add --report")
    _bad(workdir, capsys, ["--report", "--performance-score", "top1"], 2, "add it")
    assert run.main(["--source", "txt:text", "--target", "vis:img", "--m", "linear"] + SIDES) == 0
    _bad(workdir, capsys, ["--report", "--performance", "missing.csv"], 1, "missing.csv is not a file")


def test_probe_table_is_a_performance_table(toy, capsys):
    root, _, _ = toy
    assert run.main(["--task", "probe", "--target", "vis:img", "pix:img", "vis:img~noise:3", "--base_data", "toy",
                     "--seeds", "0", "-q", "--results-dir", "results/probe", "--seedwise-dir", "seedwise/probe"]) == 0
    capsys.readouterr()
    assert run.main(["--report", "--results-dir", "results/probe"]) == 0
    out = capsys.readouterr().out
    assert "probe accuracy" in out and "vis~noise:3" in out and "linear_cka" not in out  # a probe has no alignment
    scores = correlations.read_performance(root / "results" / "probe" / "table.csv", "target_side", "probe_acc")
    assert set(scores) == {"vis", "pix"}                 # the perturbed side is not the model's performance


# ----------------------------------------------------------------------------------------------------------
# The bundled demo pair under swap
# ----------------------------------------------------------------------------------------------------------

LEVELS = [0, 0.1, 0.25, 0.5, 0.75, 1]
DEMO_METHODS = ["linear", "relative", "linear_local_CKA", "kernel_local_CKA", "qap"]


def test_swap_sweep_of_the_demo_pair_falls_to_chance(tmp_path, monkeypatch):
    # all-MiniLM-L6-v2 captions vs EfficientNet-Lite0 photos on flickr1k (bundled), smaller than the demo to
    # stay fast (100 anchors, 200 queries, 20 qap restarts), seeds 0 1 2
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    q, seeds = 200, [0, 1, 2]
    argv = (["--source"] + [f"minilm:text~swap:{p}" for p in LEVELS]
            + ["--target", "efficientnet_lite0:img", "--m", *DEMO_METHODS, "--restarts", "20", "--base_data",
               "flickr1k", "--query_data", "flickr1k", "--b", "100", "--q", str(q), "-q",
               "--results-dir", str(tmp_path / "r"), "--seedwise-dir", str(tmp_path / "s")])
    assert run.main(argv) == 0
    sw = pd.concat([pd.read_csv(f) for f in (tmp_path / "s").glob("*.csv")], ignore_index=True)
    sw["level"] = sw["source_side"].map(lambda s: float(s.rsplit(":", 1)[1]))
    # kernel CKA and every method's accuracy, averaged over the seeds, fall at every step: Spearman -1
    mean = sw.groupby(["method", "level"])[["kernel_cka", "matching_acc"]].mean()
    for method in DEMO_METHODS:
        per_level = mean.loc[method]
        assert stats.spearmanr(per_level.index, per_level["matching_acc"])[0] == -1, (method, per_level)
        assert stats.spearmanr(per_level.index, per_level["kernel_cka"])[0] == -1
    # swap:1 (every caption another photo's) is at chance: within two standard errors of 1/q over 3 x q queries
    chance, se = 1 / q, np.sqrt((1 / q) * (1 - 1 / q) / (q * len(seeds)))
    at_one = mean.xs(1.0, level="level")["matching_acc"]
    assert (abs(at_one - chance) <= 2 * se).all(), at_one
    assert (mean.xs(0.0, level="level")["matching_acc"] > chance + 10 * se).all()  # and far above it unperturbed

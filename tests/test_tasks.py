"""run.py --task classes / classify: class prototypes and k-means clusters matched to class names."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from test_run import _bad

import run
from src import tasks, utils
from src.files import save_embeddings

C, D = 12, 16


def make_classes(root, sizes, noise=0.05, seed=0, text_noise=0.0):
    """Image rows around one centre per class (sizes[c] rows), text rows = a rotation of the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), D, generator=g)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    img = centres[labels] + noise * torch.randn(len(labels), D, generator=g)
    R = torch.linalg.qr(torch.randn(D, D, generator=g)).Q
    text = centres @ R + text_noise * torch.randn(len(sizes), D, generator=g)
    names = [f"class {c}" for c in range(len(sizes))]
    data = root / "data"
    save_embeddings(img, data / "toy_vis_img.pt", {"model": "vis", "classes": names, "labels": labels.tolist(),
                                                    "image_ids": [f"c{c}/{i}.jpg" for i, c in enumerate(labels)]})
    save_embeddings(text, data / "toy_txt_text.pt", {"model": "txt", "classes": names, "image_ids": None,
                                                      "templates": ["a photo of a {}."]})
    return img, labels, text


ARGS = ["--vid_model", "vis", "--text_model", "txt", "--base_data", "toy", "--query_data", "toy", "--b", "4", "-q"]


@pytest.fixture
def classes_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only_seedwise(root):
    (f,) = list((root / "seedwise").glob("*.csv"))
    return pd.read_csv(f)


def test_planted_classes_are_all_recovered(classes_dir):
    make_classes(classes_dir, [5] * C)
    for method in ("relative", "linear_local_CKA", "kernel_local_CKA", "qap"):
        for f in (classes_dir / "seedwise").glob("*.csv"):
            f.unlink()
        assert run.main(["--task", "classes", "--m", method, "--restarts", "20"] + ARGS) == 0
        sw = only_seedwise(classes_dir)
        assert (sw["matching_acc"] == 1).all() and (sw["image_acc"] == 1).all(), method
        assert (sw["query_samples"] == C - 4).all() and (sw["task"] == "classes").all()  # query classes


def test_classes_numbers_equal_the_plain_definition(classes_dir):
    sizes = [3, 7, 4, 6, 5, 2, 8, 3, 4, 5, 6, 7]          # unequal: image_acc weighs classes by images
    img, labels, text = make_classes(classes_dir, sizes, noise=1.0, text_noise=1.0)
    assert run.main(["--task", "classes", "--m", "relative", "--seeds", "0", "3"] + ARGS) == 0
    sw = only_seedwise(classes_dir)
    for row, seed in enumerate((0, 3)):
        np.random.seed(seed)                               # the paper's legacy draw, written out
        anchors = np.random.choice(C, 4, replace=False)
        queries = np.array(sorted(set(range(C)) - set(anchors.tolist())))
        protos = torch.stack([img[labels == c].mean(dim=0) for c in range(C)])
        graph = utils.relative_baseline(text[anchors], protos[anchors], text[queries], protos[queries])
        shuffle = torch.randperm(len(queries), generator=torch.Generator().manual_seed(0))
        r, col = linear_sum_assignment(graph[:, shuffle].double().numpy(), maximize=True)
        matched = shuffle.numpy()[col]                     # query class i -> matched image class position
        correct = matched == np.arange(len(queries))
        assert sw["matching_acc"][row] == pytest.approx(correct.mean())
        counts = np.array(sizes)[queries]
        assert sw["image_acc"][row] == pytest.approx((counts * correct).sum() / counts.sum())
        X = torch.cat([text[anchors], text[queries]]).double()
        Y = torch.cat([protos[anchors], protos[queries]]).double()
        assert sw["kernel_cka"][row] == pytest.approx(float(utils.kernel_CKA(X, Y)))


def test_classify_planted_clusters(classes_dir):
    make_classes(classes_dir, [6] * C, noise=0.02)
    assert run.main(["--task", "classify", "--m", "kernel_local_CKA", "relative"] + ARGS) == 0
    for f in (classes_dir / "seedwise").glob("*.csv"):
        sw = pd.read_csv(f)
        assert (sw["image_acc"] == 1).all() and (sw["matching_acc"] == 1).all(), f.name


def test_classify_numbers_equal_the_plain_definition(classes_dir):
    from sklearn.cluster import KMeans
    img, labels, text = make_classes(classes_dir, [6] * C, noise=1.2, text_noise=0.3)
    assert run.main(["--task", "classify", "--m", "relative", "--seeds", "2"] + ARGS) == 0
    sw = only_seedwise(classes_dir)
    anchors = np.random.RandomState(2).choice(C, 4, replace=False)
    queries = np.array(sorted(set(range(C)) - set(anchors.tolist())))
    protos = torch.stack([img[labels == c].mean(dim=0) for c in range(C)])
    in_q = np.isin(labels.numpy(), queries)
    X, y = img[in_q], labels.numpy()[in_q]
    km = KMeans(n_clusters=len(queries), random_state=2, n_init=10).fit(X.numpy())
    # the "true" class of each cluster: the one-to-one assignment with the most shared images
    overlap = np.array([[np.sum((km.labels_ == k) & (y == c)) for c in queries] for k in range(len(queries))])
    k_of, c_of = linear_sum_assignment(overlap, maximize=True)
    true_class_of_cluster = dict(zip(k_of, queries[c_of]))
    centres = torch.tensor(km.cluster_centers_, dtype=X.dtype)
    graph = utils.relative_baseline(text[anchors], protos[anchors], text[queries], centres)  # classes x clusters
    r, k = linear_sum_assignment(graph.double().numpy(), maximize=True)
    cluster_class = {int(kk): int(queries[rr]) for rr, kk in zip(r, k)}
    assert sw["matching_acc"][0] == pytest.approx(np.mean([cluster_class[kk] == true_class_of_cluster[kk]
                                                           for kk in range(len(queries))]))
    predicted = np.array([cluster_class[int(kk)] for kk in km.labels_])
    assert sw["image_acc"][0] == pytest.approx(np.mean(predicted == y))
    assert 0.2 < sw["image_acc"][0] < 1   # an imperfect clustering: per-image accuracy is not the pair rate


def test_vision_to_language_classes(classes_dir):
    make_classes(classes_dir, [5] * C)
    assert run.main(["--task", "classes", "--m", "relative", "-vtl"] + ARGS) == 0
    sw = only_seedwise(classes_dir)
    assert (sw["Source model"] == "vis").all() and (sw["image_acc"] == 1).all()


def test_class_lists_must_agree(classes_dir, capsys):
    make_classes(classes_dir, [5] * C)
    side = classes_dir / "data" / "toy_txt_text.json"
    meta = json.loads(side.read_text())
    meta["classes"] = meta["classes"][::-1]
    side.write_text(json.dumps(meta))
    _bad(classes_dir, capsys, ["--task", "classes", "--m", "relative"] + ARGS, 1, "different class lists",
         "toy_vis_img.pt", "toy_txt_text.pt")


def test_captions_files_are_not_class_files(classes_dir, capsys):
    make_classes(classes_dir, [5] * C)
    save_embeddings(torch.randn(60, D), classes_dir / "data" / "toy_txt_text.pt", {"image_ids": list(range(60))})
    _bad(classes_dir, capsys, ["--task", "classes", "--m", "relative"] + ARGS, 1, "no class list",
         "toy_txt_text.pt")


def test_class_task_flags(classes_dir, capsys):
    make_classes(classes_dir, [5] * C)
    _bad(classes_dir, capsys, ["--task", "classes", "--m", "relative"] + ARGS + ["--b", "12"], 1,
         "--b 12 anchor classes")
    _bad(classes_dir, capsys, ["--task", "classes", "--m", "relative", "--c", "1"] + ARGS, 2, "--c does not apply")
    _bad(classes_dir, capsys, ["--task", "classes", "--m", "relative", "--source", "txt:text", "--target",
                               "other:text"] + ARGS[4:], 2, "one side must be MODEL:img")


# ----------------------------------------------------------------------------------------------------------
# The task contract: a task with its own score column is one class and one registry line
# ----------------------------------------------------------------------------------------------------------

class FirstHalf(tasks.Captions):
    """Captions, also scored on the first half of the queries alone (a task with one score column)."""
    name = "first_half"
    description = "captions, also scored on the first half of the queries"
    columns = (tasks.ScoreColumn("first_half_acc", "first-half accuracy"),)

    def draw(self, state, cfg, seed, device):
        draw = super().draw(state, cfg, seed, device)
        half = draw.sq.shape[0] // 2
        draw.score = lambda assignment: {"first_half_acc": float(np.mean(assignment[:half] == np.arange(half)))}
        return draw


CAPTION_ARGS = ["--vid_model", "vis", "--text_model", "txt", "--base_data", "base", "--query_data", "query",
                "--b", "30", "--q", "40", "-q"]


def test_a_new_task_with_a_score_column_runs_through_main(workdir, monkeypatch, capsys):
    monkeypatch.setitem(tasks.TASKS, "first_half", FirstHalf())  # the one registry line
    assert "first_half" in run.build_parser().format_help()
    assert run.main(["--task", "first_half", "--m", "relative", "linear"] + CAPTION_ARGS) == 0
    out = capsys.readouterr().out
    frames = [pd.read_csv(f) for f in sorted((workdir / "seedwise").glob("*.csv"))]
    assert len(frames) == 2
    data = {d: [torch.load(workdir / "data" / f"{d}_{n}.pt") for n in ("txt_text", "vis_img")]
            for d in ("base", "query")}
    for sw in frames:
        assert "first_half_acc" in sw.columns and (sw["task"] == "first_half").all()
        method = sw["method"][0]
        for seed, row in zip((0, 1, 2), sw.to_dict("records")):  # the definition, written out
            sb, tb, sq, tq = utils.get_data_sep(0, seed, 30, 40, *data["base"], *data["query"], None, None, 0,
                                                False)
            graph = getattr(utils, f"{method}_baseline")(sb, tb, sq, tq)
            shuffle = torch.randperm(40, generator=torch.Generator().manual_seed(0))  # the paper's column shuffle
            r, c = linear_sum_assignment(graph[:, shuffle].double().numpy(), maximize=True)
            assignment = np.empty(40, dtype=np.int64)
            assignment[r] = shuffle.numpy()[c]
            assert row["first_half_acc"] == pytest.approx(np.mean(assignment[:20] == np.arange(20)))
            assert row["matching_acc"] == pytest.approx(np.mean(assignment == np.arange(40)))
        avg = pd.read_csv(next((workdir / "results").glob(f"*_{method}_*first_half*.csv")))
        assert avg["first_half_acc"][0] == pytest.approx(sw["first_half_acc"].mean())
    assert "first-half accuracy" in out and "relative" in out  # the printed table has the task's block


def test_a_task_may_not_fill_an_undeclared_column(workdir, monkeypatch):
    class Sneaky(FirstHalf):
        name = "sneaky"

        def draw(self, state, cfg, seed, device):
            draw = super().draw(state, cfg, seed, device)
            draw.score = lambda assignment: {"matching_acc": 1.0}
            return draw

    monkeypatch.setitem(tasks.TASKS, "sneaky", Sneaky())
    with pytest.raises(TypeError, match="does not declare"):
        run.main(["--task", "sneaky", "--m", "relative"] + CAPTION_ARGS)
    assert not list((workdir / "results").glob("*.csv"))


# ----------------------------------------------------------------------------------------------------------
# Every registry task is checked against a plain definition somewhere: where
# ----------------------------------------------------------------------------------------------------------

# task -> the test that runs it through run.main and compares its numbers with a definition written out in
# that test. A new task (e.g. blind matching's "blind") adds its line here, naming its test.
CHECKED_BY = {
    "captions": "tests/test_methods.py::test_a_new_method_with_an_option_runs_through_main",
    "classes": "tests/test_tasks.py::test_classes_numbers_equal_the_plain_definition",
    "classify": "tests/test_tasks.py::test_classify_numbers_equal_the_plain_definition",
    "probe": "tests/test_control.py::test_probe_equals_a_scikit_learn_pipeline",
    "blind": "tests/test_blind.py::test_method_and_scorer_use_the_truth_only_to_score",
}


def test_every_registry_task_names_the_test_that_checks_it():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert set(CHECKED_BY) == set(tasks.TASKS)
    for name, where in CHECKED_BY.items():
        path, test = where.split("::")
        assert f"def {test}(" in (root / path).read_text(), (name, where)


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_every_registry_task_declares_its_contract(name):
    task = tasks.TASKS[name]
    assert task.name == name and task.description and task.sides in (1, 2)
    assert set(task.uses) <= set(tasks.TASK_FLAGS)
    assert all(isinstance(c, tasks.ScoreColumn) and c.name and c.title for c in task.columns)

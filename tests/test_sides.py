"""src/sides.py: a side loaded with its sidecar, two sides paired by image id, cluster picks tied to rows."""
import pytest
import torch

from src import sides
from src.errors import DataError
from src.files import save_cluster, save_embeddings, side_file


def _save(data, name, rows, ids):
    save_embeddings(rows, side_file(data, "d", name), {"model": name.split(":")[0], "image_ids": ids})


def test_same_ids_pair_as_they_are_and_other_ids_by_intersection(tmp_path):
    a_rows, b_rows = torch.randn(5, 3), torch.randn(4, 2)
    _save(tmp_path, "a:text", a_rows, [1, 2, 3, 4, 5])
    _save(tmp_path, "b:img", b_rows, ["5", "3", "9", "1"])     # strings and another order
    a, b = sides.load_side(tmp_path, "d", "a:text"), sides.load_side(tmp_path, "d", "b:img")
    ra, rb, ia, ib = sides.pair_rows(a, b)
    assert ia.tolist() == [0, 2, 4] and ib.tolist() == [3, 1, 0]          # ids 1, 3, 5 ascending
    assert torch.equal(ra, a_rows[[0, 2, 4]]) and torch.equal(rb, b_rows[[3, 1, 0]])
    ra, rb, ia, ib = sides.pair_rows(a, a)
    assert torch.equal(ra, a_rows) and ia.tolist() == list(range(5))


def test_pairing_refusals(tmp_path):
    _save(tmp_path, "a:text", torch.randn(3, 2), [1, 2, 3])
    _save(tmp_path, "b:img", torch.randn(2, 2), [7, 8])
    _save(tmp_path, "c:img", torch.randn(3, 2), [1, 1, 2])
    a, b, c = (sides.load_side(tmp_path, "d", f"{n}") for n in ("a:text", "b:img", "c:img"))
    with pytest.raises(DataError, match="share no image id"):
        sides.pair_rows(a, b)
    with pytest.raises(DataError, match="more than once"):
        sides.pair_rows(a, c)
    torch.save(torch.randn(4, 2), side_file(tmp_path, "d", "p:text"))  # the paper's plain tensors
    torch.save(torch.randn(3, 2), side_file(tmp_path, "d", "q:img"))
    p, q = sides.load_side(tmp_path, "d", "p:text"), sides.load_side(tmp_path, "d", "q:img")
    assert p.sidecar is None and p.ids is None
    with pytest.raises(DataError, match="must pair row by row"):
        sides.pair_rows(p, q)


def test_a_cut_file_is_named_with_the_command_that_remakes_it(tmp_path):
    _save(tmp_path, "allroberta:text", torch.randn(3, 2), [1, 2, 3])
    torch.save(torch.randn(2, 2), side_file(tmp_path, "d", "allroberta:text"))  # replaced behind its back
    with pytest.raises(DataError, match=r"has 2 rows but its sidecar .* lists 3.*"
                                        r"python get_embeds.py --m allroberta --d d .*--overwrite"):
        sides.load_side(tmp_path, "d", "allroberta:text")
    # a model get_embeds.py does not know: no command that would be refused, the place to put the file instead
    _save(tmp_path, "a:text", torch.randn(3, 2), [1, 2, 3])
    torch.save(torch.randn(2, 2), side_file(tmp_path, "d", "a:text"))
    with pytest.raises(DataError, match=r"lists 3.*a is not a model get_embeds.py knows") as err:
        sides.load_side(tmp_path, "d", "a:text")
    assert "python get_embeds.py --m" not in str(err.value)


def test_cluster_picks_are_tied_to_their_rows(tmp_path):
    rows = torch.randn(6, 2)
    _save(tmp_path, "a:text", rows, [1, 2, 3, 4, 5, 6])
    path = side_file(tmp_path, "d", "a:text", cluster=True)
    save_cluster(torch.tensor([0, 3, 5]), path, side_file(tmp_path, "d", "a:text"), rows, 3, False, "k")
    a = sides.load_side(tmp_path, "d", "a:text")
    keep = torch.tensor([0, 2, 3, 5])   # rows the pairing kept
    assert sides.load_side_cluster(tmp_path, "d", a, 3, keep).tolist() == [0, 2, 3]
    with pytest.raises(DataError, match="anchor row"):
        sides.load_side_cluster(tmp_path, "d", a, 3, torch.tensor([0, 1, 2]))
    _save(tmp_path, "a:text", rows + 1, [1, 2, 3, 4, 5, 6])           # re-extracted since
    with pytest.raises(DataError, match="made from other embeddings"):
        sides.load_side_cluster(tmp_path, "d", sides.load_side(tmp_path, "d", "a:text"), 3, keep)

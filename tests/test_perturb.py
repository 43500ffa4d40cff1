"""src/perturb.py and the side grammar: every kind against its definition on small tensors and captions, level 0
as the identity, and the file names of perturbed sides."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src import perturb
from src.errors import UsageError
from src.files import side_file
from src.names import Side, parse_side


def rows(n=12, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def partner(out_row, X):
    """The index j with X[j] == out_row (rows of X are distinct random vectors)."""
    hits = [j for j in range(len(X)) if torch.equal(out_row, X[j])]
    assert len(hits) == 1
    return hits[0]


# ----------------------------------------------------------------------------------------------------------
# The grammar
# ----------------------------------------------------------------------------------------------------------

def test_side_grammar_parses_from_the_right_and_writes_levels_one_way():
    s = parse_side("hf:org/x@blocks.3:img~blur:2.50")
    assert (s.model, s.modality, s.lang, s.perturbation.kind, s.perturbation.level) == \
        ("hf:org/x@blocks.3", "img", None, "blur", 2.5)
    assert s.text == "hf:org/x@blocks.3:img~blur:2.5"
    de = parse_side("use:text:de~drop:.25")
    assert (de.lang, de.text) == ("de", "use:text:de~drop:0.25")
    assert parse_side("mpnet:text~swap:1.0").text == "mpnet:text~swap:1"
    assert parse_side("x:img~patches:4.0").perturbation.level == 4
    assert parse_side("mpnet:text~swap:0") != parse_side("mpnet:text")        # its own configuration
    assert parse_side("mpnet:text~swap:0.5").file_side == parse_side("mpnet:text")  # a row kind: same file
    assert parse_side("mpnet:text~drop:0.5").file_side == parse_side("mpnet:text~drop:0.5")


@pytest.mark.parametrize("text, needle", [
    ("mpnet:text~nosuchkind:0.5", "unknown kind 'nosuchkind'"),
    ("mpnet:text~swap:1.5", "p in [0, 1]"), ("mpnet:text~swap:-0.1", "p in [0, 1]"),
    ("mpnet:text~mix:2", "u in [0, 1]"), ("mpnet:text~drop:1.01", "p in [0, 1]"),
    ("mpnet:text~shuffle:-1", "p in [0, 1]"), ("mpnet:text~noise:-0.5", "s >= 0"),
    ("x:img~blur:-1", "sigma >= 0"), ("x:img~patches:0", "k >= 1"), ("x:img~patches:2.5", "whole number"),
    ("mpnet:text~swap", "write swap:p"), ("mpnet:text~swap:nan", "write swap:p"),
    ("mpnet:text~swap:inf", "write swap:p"), ("x:img~drop:0.5", "needs a MODEL:text side"),
    ("mpnet:text~blur:1", "needs a MODEL:img side"),
])
def test_bad_perturbations_are_usage_errors(text, needle):
    with pytest.raises(UsageError) as e:
        parse_side(text)
    assert needle in str(e.value)


def test_file_names_of_perturbed_sides(tmp_path):
    assert side_file("data", "flickr1k", "mpnet:text~drop:0.25").name == "flickr1k_mpnet_text~drop~0.25.pt"
    assert side_file("data", "flickr1k", "use:text:de~shuffle:0.5").name == "flickr1k-de_use_text~shuffle~0.5.pt"
    assert side_file("data", "c", "random:efficientnet_lite0:img~blur:1").name == \
        "c_random~efficientnet_lite0_img~blur~1.pt"
    assert side_file("data", "f", "mpnet:text~swap:0.5") == side_file("data", "f", "mpnet:text")  # rows: same file
    assert side_file("data", "f", "x:img~patches:4", cluster=True).name == "f_x_img~patches~4_cluster.pt"
    # injective, and a perturbed input file never has another (unperturbed) side's name: model names that
    # imitate the suffix are escaped (':' -> '~' only where the name has ':', and a '~' in a name is %7E)
    # ('~' in a side always starts its perturbation, so models named with '~' are built as Side objects)
    sides = [parse_side(s) for s in ("mpnet:text~drop:0.25", "mpnet:text~drop:0.5", "mpnet:text~shuffle:0.25",
                                     "mpnet:text", "mpnet:text:drop:text", "a:text~drop:0.25", "x:img~blur:1",
                                     "x:img~patches:1", "x:img", "random:x:img~blur:1")]
    sides += [Side("a~drop~0.25", "text"), Side("hf:a_text~drop", "text"), Side("x~blur~1", "img"),
              Side("a:text~drop:0.25", "text"), Side("random~x", "img"), Side("x_img~blur", "img", None, "blur:1")]
    names = [side_file("data", "d", s).name for s in sides]
    assert len(set(names)) == len(names), names
    for s, name in zip(sides, names):
        unperturbed_shape = name.endswith(("_img.pt", "_text.pt"))
        assert unperturbed_shape == (s.perturbation is None), (s, name)


# ----------------------------------------------------------------------------------------------------------
# Row kinds
# ----------------------------------------------------------------------------------------------------------



@pytest.mark.parametrize("p, n, m", [(0.5, 12, 6), (0.25, 12, 3), (1, 12, 12), (0.1, 12, 2), (0.04, 12, 0),
                                     (0.05, 12, 2)])
def test_swap_is_a_derangement_among_round_p_n_chosen_rows(p, n, m):
    # m = round(p n), a single row raised to 2 (0.05 x 12 = 0.6 -> 1 -> 2); 0.04 x 12 = 0.48 -> 0
    X = rows(n)
    out = perturb.perturb_rows(X, f"swap:{p}", perturb.rng(7, 0, 0))
    moved = [i for i in range(n) if not torch.equal(out[i], X[i])]
    assert len(moved) == m
    sigma = {i: partner(out[i], X) for i in moved}
    assert all(sigma[i] != i for i in moved)                   # no chosen row keeps its own row
    assert sorted(sigma.values()) == sorted(moved)             # a permutation among the chosen rows


def test_swap_levels_are_nested_and_seeded():
    X = rows(40)

    def moved(p, seed):
        out = perturb.perturb_rows(X, f"swap:{p}", perturb.rng(seed, 0, 0))
        return {i for i in range(len(X)) if not torch.equal(out[i], X[i])}
    assert moved(0.25, 3) < moved(0.5, 3) < moved(0.75, 3) < moved(1, 3) == set(range(40))
    assert moved(0.5, 3) == moved(0.5, 3) and moved(0.5, 3) != moved(0.5, 4)


def test_noise_is_s_times_the_entry_std_times_a_seeded_normal_matrix():
    X = rows(30, 6)
    for s in (0.1, 1.0, 3.0):
        out = perturb.perturb_rows(X, f"noise:{s}", perturb.rng(5, 1, 0))
        z = torch.as_tensor(np.random.default_rng([5, 1, 0]).standard_normal((30, 6)))  # the definition
        assert torch.allclose(out, X + s * X.std() * z, rtol=0, atol=1e-12)


def test_mix_is_a_convex_combination_with_a_fixed_derangement():
    X = rows(15, 4)
    perms = []
    for u in (0.25, 0.5, 1.0):
        out = perturb.perturb_rows(X, f"mix:{u}", perturb.rng(2, 0, 0))
        other = (out - (1 - u) * X) / u                      # should be the rows of X, permuted
        pi = [int(torch.cdist(other[i:i + 1], X).argmin()) for i in range(len(X))]
        assert torch.allclose(other, X[pi], atol=1e-12)
        assert sorted(pi) == list(range(len(X))) and all(pi[i] != i for i in range(len(X)))
        perms.append(pi)
    assert perms[0] == perms[1] == perms[2]                  # one permutation per seed, whatever the level


def test_pool_of_an_unperturbed_or_input_perturbed_side_is_untouched():
    X = rows()
    for side in ("t:text", "t:text~drop:0.5"):
        assert perturb.perturb_pool(X, parse_side(side), 0, 0) is X
    assert not torch.equal(perturb.perturb_pool(X, parse_side("t:text~swap:1"), 0, 0), X)


# ----------------------------------------------------------------------------------------------------------
# Input kinds: captions
# ----------------------------------------------------------------------------------------------------------

CAPTION = "a  dog runs on the green grass ."


def test_drop_keeps_words_in_order_and_at_least_one():
    words = CAPTION.split()
    assert perturb.drop_words(CAPTION, 0, perturb.rng(0)) == CAPTION          # level 0: the caption as it is
    for seed in range(20):
        out = perturb.drop_words(CAPTION, 0.5, perturb.rng(seed)).split()
        it = iter(words)
        assert all(w in it for w in out) and 1 <= len(out) <= len(words)     # a subsequence
        assert len(perturb.drop_words(CAPTION, 1, perturb.rng(seed)).split()) == 1
    rates = [1 - len(perturb.drop_words(CAPTION, 0.3, perturb.rng(s)).split()) / len(words) for s in range(400)]
    assert abs(np.mean(rates) - 0.3) < 0.03                                   # each word with probability p


def test_shuffle_permutes_round_p_words_with_none_in_place():
    caption = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    assert perturb.shuffle_words(caption, 0, perturb.rng(0)) == caption
    for p, m in ((0.5, 5), (1, 10), (0.3, 3), (0.1, 2)):
        out = perturb.shuffle_words(caption, p, perturb.rng(1)).split()
        assert sorted(out) == sorted(caption.split())
        assert sum(o != f"w{i}" for i, o in enumerate(out)) == m


def test_captions_are_perturbed_per_row_and_caption():
    caps = [["a b c d e", "f g h"], ["i j k l"]]
    out = perturb.perturb_captions(caps, "drop:0.5", seed=3)
    assert out[1][0] == perturb.drop_words("i j k l", 0.5, perturb.rng(3, 1, 0))
    assert perturb.perturb_captions(caps, "shuffle:0", seed=3) == caps


# ----------------------------------------------------------------------------------------------------------
# Input kinds: images
# ----------------------------------------------------------------------------------------------------------

def plain_blur(x, sigma):
    """The definition: a normalised 1-D Gaussian of 2 ceil(3 sigma) + 1 taps, along rows then columns,
    reflected edges."""
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    C = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


# ----------------------------------------------------------------------------------------------------------
# Every kind of the registry against its plain definition, written here with loops and its own draws
# ----------------------------------------------------------------------------------------------------------

def plain_derangement(m, gen):
    while True:
        perm = [int(v) for v in gen.permutation(m)]
        if all(perm[i] != i for i in range(m)):
            return perm


def plain_swap_positions(n, p, gen):
    """[(position, takes item)]: the first round(p n) of a permutation (1 raised to 2), a derangement among them."""
    order = [int(v) for v in gen.permutation(n)]
    m = math.floor(p * n + 0.5)
    m = (2 if n >= 2 else 0) if m == 1 else m
    chosen = order[:m]
    perm = plain_derangement(m, gen) if m else []
    return [(chosen[i], chosen[perm[i]]) for i in range(m)]


def plain_swap(X, p, gen):
    out = X.clone()
    for i, j in plain_swap_positions(len(X), p, gen):
        out[i] = X[j]
    return out


def plain_noise(X, s, gen):
    z = gen.standard_normal(tuple(X.shape))
    sd = float(np.std(X.numpy(), ddof=1))  # the entries' standard deviation (torch's std: n - 1)
    return torch.tensor([[float(X[i, j]) + s * sd * z[i, j] for j in range(X.shape[1])] for i in range(len(X))])


def plain_mix(X, u, gen):
    pi = plain_derangement(len(X), gen)
    return torch.stack([(1 - u) * X[i] + u * X[pi[i]] for i in range(len(X))])


def plain_drop(caption, p, gen):
    words = caption.split()
    keep = [float(r) >= p for r in gen.random(len(words))]
    if not any(keep):
        keep[int(gen.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def plain_shuffle(caption, p, gen):
    words = caption.split()
    out = list(words)
    for i, j in plain_swap_positions(len(words), p, gen):
        out[i] = words[j]
    return " ".join(out)


def plain_patches(x, k, rows, seed):
    H, W = x.shape[-2:]
    ph, pw = H // k, W // k
    out = x.clone()
    for b, r in enumerate(rows):
        perm = np.random.default_rng([seed, r]).permutation(k * k)
        for c in range(k * k):
            (i, j), (si, sj) = divmod(c, k), divmod(int(perm[c]), k)
            out[b, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = x[b, :, si * ph:(si + 1) * ph, sj * pw:(sj + 1) * pw]
    return out


# kind -> (a level other than the identity, the plain definition). Rows: (X, level, gen); captions: (caption,
# level, gen); images: (x, level, rows, seed), as ``Kind.apply``. A new kind adds its entry here.
PLAIN = {
    "swap": (0.5, plain_swap),
    "noise": (0.7, plain_noise),
    "mix": (0.3, plain_mix),
    "drop": (0.4, plain_drop),
    "shuffle": (0.5, plain_shuffle),
    "blur": (1.5, lambda x, sigma, rows, seed: plain_blur(x, sigma)),
    "patches": (3, plain_patches),
}

CAPTIONS = [["a dog runs on the green grass .", "two men"], ["w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"]]


def test_every_kind_has_a_plain_definition_and_a_definition_line():
    assert set(PLAIN) == set(perturb.KINDS)
    for name, kind in perturb.KINDS.items():
        assert kind.apply is not None and kind.meaning and "\n" not in kind.meaning, name
        assert kind.applies_to in ("rows", "captions", "images"), name


def apply_public(kind, text, seed):
    """A kind through the function its callers use (run.py's rows, get_embeds.py's captions or images)."""
    if kind.applies_to == "rows":
        X = rows(12, 4)
        return X, perturb.perturb_rows(X, text, perturb.rng(seed, 0, 0))
    if kind.applies_to == "captions":
        return CAPTIONS, perturb.perturb_captions(CAPTIONS, text, seed)
    x = torch.randn(2, 3, 13, 16, generator=torch.Generator().manual_seed(0))
    return x, perturb.image_perturbation(text, seed)(x, [4, 9])


@pytest.mark.parametrize("name", list(perturb.KINDS))
def test_kind_equals_its_plain_definition(name):
    kind, (level, plain) = perturb.KINDS[name], PLAIN[name]
    text = perturb.Perturbation(name, level).text
    data, out = apply_public(kind, text, seed=7)
    if kind.applies_to == "rows":
        want = plain(data, level, np.random.default_rng([7, 0, 0]))
        assert torch.allclose(out, want.to(out.dtype), rtol=0, atol=1e-12)
    elif kind.applies_to == "captions":
        assert out == [[plain(c, level, np.random.default_rng([7, i, j])) for j, c in enumerate(caps)]
                       for i, caps in enumerate(data)]
    else:
        assert torch.allclose(out, plain(data, level, [4, 9], 7), atol=1e-5)
    assert not _same(out, data)  # the level chosen does perturb


def _same(a, b):
    return a == b if isinstance(a, list) else torch.equal(a, b)


@pytest.mark.parametrize("name", list(perturb.KINDS))
def test_level_low_is_the_identity(name):
    kind = perturb.KINDS[name]
    data, out = apply_public(kind, perturb.Perturbation(name, kind.low).text, seed=0)
    assert out is data if kind.applies_to != "captions" else out == data


def test_blur_equals_a_separable_gaussian():
    x = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    for sigma in (0.5, 1.0, 2.0):
        assert torch.allclose(perturb.blur_images(x, sigma), plain_blur(x, sigma), atol=1e-5)
    assert perturb.blur_images(x, 0) is x


def test_patches_are_a_permutation_of_the_grid():
    x = torch.randn(2, 3, 13, 10, generator=torch.Generator().manual_seed(0))  # 13 x 10: remainders stay
    k, perms = 3, [np.random.default_rng(s).permutation(9) for s in (0, 1)]
    out = perturb.shuffle_patches(x, k, perms)
    ph, pw = 13 // 3, 10 // 3

    def patch(t, b, c):
        i, j = divmod(c, k)
        return t[b, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]
    for b in range(2):
        for c in range(k * k):
            assert torch.equal(patch(out, b, c), patch(x, b, int(perms[b][c])))
    assert torch.equal(out[..., 3 * ph:, :], x[..., 3 * ph:, :]) and torch.equal(out[..., 3 * pw:], x[..., 3 * pw:])
    assert perturb.shuffle_patches(x, 1, None) is x
    with pytest.raises(UsageError):
        perturb.shuffle_patches(x, 11, [np.arange(121)] * 2)

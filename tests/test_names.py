"""src/names.py: model names and sides parsed once; file tags that never collide."""
import itertools

import pytest

from src.errors import UsageError
from src.names import FINAL, ModelName, Side, file_tag, parse_model, parse_side


@pytest.mark.parametrize("text, base, layer, random", [
    ("efficientnet_lite0", "efficientnet_lite0", None, False),
    ("efficientnet_lite0@final", "efficientnet_lite0", None, False),
    ("efficientnet_lite0@_blocks.8", "efficientnet_lite0", "_blocks.8", False),
    ("random:efficientnet_lite0@_blocks.8", "efficientnet_lite0", "_blocks.8", True),
    ("hf:facebook/dinov2-small@encoder.layer.6", "hf:facebook/dinov2-small", "encoder.layer.6", False),
])
def test_parse_model(text, base, layer, random):
    m = parse_model(text)
    assert (m.base, m.layer, m.random) == (base, layer, random)
    assert parse_model(m.text) == m and m.at(FINAL) == ModelName(base, None, random)


@pytest.mark.parametrize("bad", ["", "@_blocks.1", "x@", "x@a@b", "random:"])
def test_bad_model_names_are_usage_errors(bad):
    with pytest.raises(UsageError, match="MODEL"):
        parse_model(bad)


def test_sides_parse_from_the_right():
    assert parse_side("hf:org/x@blocks.3:img") == Side("hf:org/x@blocks.3", "img")
    assert parse_side("use:text:de") == Side("use", "text", "de")
    assert parse_side("minilm:text").dataset("flickr1k") == "flickr1k"
    assert parse_side("use:text:de").dataset("flickr1k") == "flickr1k-de"
    assert parse_side("clip:openai/x:text").model == "clip:openai/x"
    for bad in ("minilm", "minilm:txt", "minilm:img:"):
        with pytest.raises(UsageError, match="MODEL:img"):
            parse_side(bad)


def test_file_tags_are_readable_and_injective():
    assert file_tag("efficientnet_lite0@final") == "efficientnet_lite0"
    assert file_tag("hf:facebook/dinov2-small@encoder.layer.6") == "hf~facebook+dinov2-small@encoder.layer.6"
    assert file_tag("random:efficientnet_lite0") == "random~efficientnet_lite0"
    # the stand-ins themselves and every other character are escaped: distinct names, distinct tags
    pieces = ["a", "~", "+", ":", "/", "%", "é", " ", "@b"]
    names = {"".join(p) for p in itertools.product(pieces, repeat=3) if not "".join(p).startswith("@")}
    names = {n for n in names if n.count("@") <= 1 and not n.endswith("@") and not n.startswith("random:")}
    tags = {}
    for n in names:
        try:
            key = parse_model(n).text
        except UsageError:
            continue
        tags.setdefault(file_tag(n), set()).add(key)
    assert all(len(v) == 1 for v in tags.values())
    assert all("/" not in t and ":" not in t for t in tags)

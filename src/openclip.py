"""open_clip models: the CLIP variants trained on LAION, DataComp, DFN, ... by the names open_clip gives them.

Ids (BASE in ``[random:]BASE[@LAYER]``):
- ``openclip:ARCH/TAG``: an architecture of ``open_clip.list_models()`` and a tag of
  ``open_clip.list_pretrained()`` (``openclip:ViT-B-32/laion2b_s34b_b79k``); open_clip fetches the weights
  (Hugging Face cache). The tag's preprocessing and its QuickGELU setting are applied (open_clip itself
  only warns when an architecture's activation differs from the one the tag was trained with).
- ``openclip:ARCH/FILE``: a local checkpoint file, as open_clip's ``pretrained=FILE`` takes it (relative or
  absolute: ``openclip:ViT-B-32//abs/path.pt``); preprocessing is the architecture's default. The file
  name of the rows holds the path as written (escaped by ``names.file_tag``), so the same file under
  another path is another name: for short, portable names use ``openclip:ARCH`` or ``openclip:ARCH/TAG``
  with ``--weights FILE`` (a local copy of a tag's weights keeps the tag's preprocessing).
- ``openclip:hf-hub:ORG/NAME``: config, weights, preprocessing and tokenizer from that hub repository.
- ``random:openclip:...``: the architecture (and a tag's preprocessing) after ``torch.manual_seed(0)``, no
  weights read (for hf-hub ids only ``open_clip_config.json`` is fetched).

Rows: ``model.encode_image`` of the preprocessed image (``_img``) and ``model.encode_text`` of each caption
with the model's own tokenizer, averaged over an image's captions (``_text``): the towers' features as
returned, not L2-normalised. Layers: ``@LAYER`` is a path of the whole model's ``named_modules()``
(``visual.transformer.resblocks.6`` runs for images, ``transformer.resblocks.6`` for text; ``--list-layers``
lists both); text taps average over real tokens (up to the end-of-text token, or the non-padding ones).

Unknown ARCH or TAG is a UsageError (exit 2) with the closest names, checked before anything is fetched.
"""
import contextlib
import difflib
import json
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch

from .encoder_base import Encoder, EncoderSpec
from .errors import DataError, UsageError

PREFIX = "openclip:"
HF_HUB = "hf-hub:"
POOLING = ("image: model.encode_image; text: model.encode_text of each caption, averaged over an image's "
           "captions; both as the towers return them (unnormalised), with the model's own preprocessing and "
           "tokenizer")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
LIST_HINT = "python -c \"import open_clip; print(open_clip.list_pretrained())\" lists (ARCH, TAG) pairs"


def openclip_spec(name):
    """The spec of an ``openclip:`` id, its ARCH and TAG checked against open_clip's lists (no download)."""
    import open_clip
    ident = name[len(PREFIX):]
    if ident.startswith(HF_HUB):
        repo = ident[len(HF_HUB):]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"model {name}: write openclip:hf-hub:ORG/NAME (a Hugging Face repository holding "
                             f"open_clip_config.json)")
        return EncoderSpec(name, "openclip", ident, ("img", "text"), POOLING,
                           options={"arch": ident, "pretrained": None, "kind": "hf-hub"})
    arch, _, pretrained = ident.partition("/")
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=5)
        raise UsageError(f"model {name}: {arch!r} is not an open_clip architecture"
                         + (f"; closest: {', '.join(close)}" if close else "")
                         + f" (open_clip.list_models() lists them; {LIST_HINT})")
    if not pretrained:
        kind = None
    elif open_clip.is_pretrained_cfg(arch, pretrained):
        kind = "tag"
    elif os.path.isfile(pretrained):
        kind = "file"
    elif "/" in pretrained or os.sep in pretrained or pretrained.lower().endswith(CHECKPOINT_SUFFIXES):
        raise DataError(f"model {name}: checkpoint file {pretrained} does not exist (after ARCH/ comes an "
                        f"open_clip tag or a checkpoint file; an absolute path is written ARCH//path)")
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        close = difflib.get_close_matches(pretrained, tags, n=5)
        raise UsageError(f"model {name}: {pretrained!r} is neither a pretrained tag of {arch} nor a file"
                         + (f"; closest: {', '.join(close)}" if close else
                            f"; its tags: {', '.join(tags)}" if tags else f"; {arch} has no pretrained tags")
                         + f" ({LIST_HINT})")
    return EncoderSpec(name, "openclip", ident, ("img", "text"), POOLING,
                       options={"arch": arch, "pretrained": pretrained or None, "kind": kind})


def _not_ours_to_say(record):
    """open_clip logs its failures on the root logger before raising them (we report them as one message) and
    warns that a model without weights is random (random: asks for that)."""
    if "open_clip" not in record.pathname:
        return True
    return record.levelno < logging.ERROR and "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _load_errors(spec, what, local):
    """One DataError for anything open_clip raises while loading (no download possible, a bad checkpoint)."""
    root = logging.getLogger()
    root.addFilter(_not_ours_to_say)
    try:
        yield
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError, pickle.UnpicklingError) as e:
        # AssertionError: a checkpoint of another architecture (open_clip's resize checks); UnpicklingError: a
        # pickled payload, refused by weights_only loading (nothing in it ran)
        detail = f"({type(e).__name__}: {str(e)[:300]})"
        if isinstance(e, pickle.UnpicklingError):
            detail = "(it holds pickled Python objects, not only tensors: it was not loaded, nothing in it ran)"
        elif isinstance(e, AssertionError):
            detail = f"(a checkpoint of another architecture? open_clip says: {str(e)[:200] or 'AssertionError'})"
        if local:
            raise DataError(f"model {spec.name}: {what} cannot be loaded into {spec.options['arch']} {detail}")
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        kind, arch, tag = (spec.options[k] for k in ("kind", "arch", "pretrained"))
        call = f"'{arch}'" + (f", pretrained='{tag}'" if kind == "tag" else "")
        raise DataError(
            f"model {spec.name}: open_clip could not fetch {what}{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
            f"it is not in the local cache. On a machine with network load it once (python -c \"import open_clip; "
            f"open_clip.create_model_and_transforms({call})\"), copy the cache (HF_HOME), and run with "
            f"HF_HUB_OFFLINE=1; or pass --weights FILE with a local copy {detail}")
    finally:
        root.removeFilter(_not_ours_to_say)


def _preprocess_overrides(cfg):
    """create_model_and_transforms arguments that give a tag's preprocessing and activation."""
    out = {k2: cfg[k] for k, k2 in (("mean", "image_mean"), ("std", "image_std"),
                                     ("interpolation", "image_interpolation"), ("resize_mode", "image_resize_mode"))
           if k in cfg}
    out["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
    return out


# Never load a tower's own base weights (a Hugging Face text model, a timm image model) in place of a CLIP
# checkpoint: with random: that would not be random, and otherwise the checkpoint replaces them anyway.
_NO_BASE_WEIGHTS = {"pretrained_text": False, "pretrained_image": False}


class OpenClipEncoder(Encoder):
    """open_clip: both towers (see the module docstring). ``source`` is the spec's id (``hub_id``), or the
    --weights file. Taps: paths of self.model (CLIP: ``visual.*``, ``transformer.*``; CustomTextCLIP:
    ``visual.*``, ``text.*``)."""

    def __init__(self, spec, source, device, random=False):
        super().__init__(spec, source, device, random)
        import open_clip
        kind, arch, pretrained = (spec.options[k] for k in ("kind", "arch", "pretrained"))
        file = None if str(source) == spec.hub_id else str(source)  # --weights FILE
        if kind == "file" and file is not None:
            raise UsageError(f"model {spec.name} names a checkpoint file, and --weights gives another: drop one "
                             f"(openclip:{arch} --weights FILE, or openclip:{arch}/FILE)")
        if kind is None and file is None and not random:
            raise UsageError(f"model {spec.name}: name its weights, openclip:{arch}/TAG (open_clip.list_pretrained()) "
                             f"or openclip:{arch}/FILE, or pass --weights FILE, or use random:{spec.name}")
        kwargs = _preprocess_overrides(open_clip.get_pretrained_cfg(arch, pretrained)) if kind == "tag" else {}
        if random:
            torch.manual_seed(0)
        if kind == "hf-hub" and (random or file):
            self.model, preprocess, self.tokenizer = self._from_hub_config(open_clip, spec, file)
        else:
            weights = None if random else file or pretrained
            what = (f"checkpoint {weights}" if weights != pretrained or kind == "file" else
                    f"the weights of {spec.hub_id}")
            with _load_errors(spec, what, local=weights is not None and os.path.isfile(str(weights))):
                self.model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=weights if kind != "hf-hub" else None, **kwargs, **_NO_BASE_WEIGHTS)
                self.tokenizer = open_clip.get_tokenizer(arch)
        self.model = self.model.to(device).eval()
        self.transform = preprocess

    @staticmethod
    def _from_hub_config(open_clip, spec, file):
        """Architecture, preprocessing and tokenizer of an hf-hub repository from its open_clip_config.json
        alone (random:, or --weights FILE: no weights fetched)."""
        from huggingface_hub import hf_hub_download
        repo = spec.hub_id[len(HF_HUB):]
        with _load_errors(spec, f"{repo}'s open_clip_config.json", local=False):
            config = hf_hub_download(repo, "open_clip_config.json")
        tmp = Path(tempfile.mkdtemp(prefix="openclip-config-"))
        try:
            shutil.copyfile(config, tmp / "open_clip_config.json")
            json.loads((tmp / "open_clip_config.json").read_text())
            with _load_errors(spec, f"{repo}'s open_clip_config.json", local=True):
                model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp}", **_NO_BASE_WEIGHTS)
                tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp}")
            if file:
                with _load_errors(spec, f"checkpoint {file}", local=True):
                    open_clip.load_checkpoint(model, file)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return model, preprocess, tokenizer

    def encode_images(self, pixels):
        return self._finish(self.model.encode_image(pixels, normalize=False))

    def text_rows(self, texts):
        tokens = self.tokenizer(list(texts)).to(self.device)
        rows = self.model.encode_text(tokens, normalize=False)
        return self._finish(rows), self._token_mask(tokens)

    def _token_mask(self, tokens):
        """N x T, 1 for real tokens: up to and including the first end-of-text token (open_clip's BPE
        tokenizer), else the non-padding tokens (Hugging Face tokenizers); None when neither is known."""
        eot = getattr(self.tokenizer, "eot_token_id", None)
        if eot is not None:
            is_eot = (tokens == eot).int()
            return ((torch.cumsum(is_eot, dim=1) - is_eot) == 0).long()
        pad = getattr(getattr(self.tokenizer, "tokenizer", None), "pad_token_id", None)
        return None if pad is None else (tokens != pad).long()

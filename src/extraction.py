"""The one extraction loop: batched, resumable, shardable over torchrun ranks.

Rows are cut into fixed chunks (``chunk_size`` images). Batches never cross a chunk, so a chunk's rows
do not depend on which process computes it or whether the run was resumed. Each finished chunk is saved
atomically in ``.{output}.partial/``; a killed run continues from the chunks already there. With
torchrun, chunk k belongs to rank k % world_size; rank 0 waits for all of them and assembles the rows in
order. The partial folder is removed once the final file is written.

Several outputs of one forward pass (layer taps, ``extract_layers``): each output has its own partial
folder; a chunk counts as done only when every output has it, so a run killed between two saves redoes
that chunk for all of them.
"""
import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .datasets import open_rgb
from .errors import DataError
from .files import atomic_torch_save, atomic_write_text, load_tensor
from .names import FINAL

_logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# -b auto: images a batch by device type. On a CPU one image a batch is fastest (measured with
# benchmarks/bench_extract.py on 2 cores: batches of 32 ran slower than the paper's one-image loop); on a
# GPU batches keep it busy. Text batches stay at 32 images' captions everywhere: on the CPU batching
# captions is faster than one image's captions at a time (see README, Speed).
AUTO_BATCH = {"img": {"cpu": 1}, "text": {}}
AUTO_BATCH_DEFAULT = 32


def resolve_num_workers(num_workers, device):
    """-j: an int >= 0, or "auto": on the CPU, workers decode on the cores the forward pass runs on, so
    they only pay with cores to spare (bench_extract.py, 2 cores, EfficientNet-Lite0 one image a batch:
    0 workers 52.4, 1 worker 47.7, 2 workers 46.4 images/s, against 50.8 for the paper's loop); on a GPU
    up to 4 keep it fed."""
    if num_workers != "auto":
        return int(num_workers)
    cores = os.cpu_count() or 1
    return max(0, min(4, cores - 2)) if torch.device(device).type == "cpu" else min(4, cores)


def resolve_batch_size(batch_size, device, modality):
    """-b: an int >= 1, or "auto" (AUTO_BATCH by modality and device type, else AUTO_BATCH_DEFAULT)."""
    if batch_size != "auto":
        return int(batch_size)
    return AUTO_BATCH[modality].get(torch.device(device).type, AUTO_BATCH_DEFAULT)


def autocast(device, precision):
    """fp32: nothing; bf16 / fp16: torch.autocast on the device (rows are saved as float32 anyway)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class _Images(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(open_rgb(self.paths[i]))


def _image_error(paths, transform, error):
    """The DataError for a batch whose loading failed (error: what the loader raised). A worker's exception
    reaches us re-formatted by torch, so the batch's images are retried here, in this process, to find the
    file and its own error; if they all load, the failure was not an image's (e.g. a killed worker) and
    error itself is re-raised."""
    for path in paths:
        try:
            image = open_rgb(path)
        except Exception as e:  # PIL raises many types for bad files
            return DataError(f"image {path} cannot be decoded ({type(e).__name__}: {str(e)[:200]}); fix or "
                             f"remove the file, or re-run with --skip-missing to drop such images")
        try:
            transform(image)
        except Exception as e:  # the model's preprocessing refused it (size, mode, ...)
            return DataError(f"image {path} decodes but the model's preprocessing fails on it "
                             f"({type(e).__name__}: {str(e)[:200]}); fix the file (e.g. save it as an ordinary "
                             f"RGB JPEG) or remove it from the images and the captions json")
    return error


def _chunks(n, chunk_size):
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _batches(start, end, batch_size):
    return [list(range(s, min(s + batch_size, end))) for s in range(start, end, batch_size)]


class _Partial:
    """Chunk files of one output, valid only for the same model, rows, modality and chunking."""

    def __init__(self, out_path, fingerprint):
        out_path = Path(out_path)
        self.dir = out_path.parent / f".{out_path.name}.partial"
        self.fingerprint = fingerprint

    def prepare(self, rank):
        meta = self.dir / "meta.json"
        if rank == 0:
            if meta.is_file() and json.loads(meta.read_text()).get("fingerprint") != self.fingerprint:
                _logger.warning("discarding %s: it was made by another model, dataset or chunking", self.dir)
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta, json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def path(self, k):
        return self.dir / f"chunk_{k:06d}.pt"

    def done(self, k):
        return self.path(k).is_file()

    def save(self, k, rows):
        atomic_torch_save(rows.contiguous(), self.path(k))

    def load(self, k):
        return load_tensor(self.path(k))

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def fingerprint(encoder, dataset, modality, chunk_size, precision, layer=FINAL, perturbation=None):
    key = [encoder.name, str(encoder.source), dataset.name, list(map(str, dataset.ids)), modality, chunk_size,
           precision] + ([] if layer == FINAL else [layer])  # final keeps the fingerprint it always had
    if perturbation is not None:  # another seed's chunks are not this file's
        key.append(perturbation)
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()


def extract(encoder, dataset, modality, out_path, batch_size=32, num_workers=4, precision="fp32",
            chunk_size=512, rank=0, world_size=1, progress=True):
    """Embeddings (N x D float32, on the CPU) of one modality; None on ranks other than 0."""
    rows = extract_layers(encoder, dataset, modality, {FINAL: out_path}, batch_size, num_workers, precision,
                          chunk_size, rank, world_size, progress)
    return None if rows is None else rows[FINAL]


def extract_layers(encoder, dataset, modality, outputs, batch_size=32, num_workers=4, precision="fp32",
                   chunk_size=512, rank=0, world_size=1, progress=True, perturb=None, perturbation=None):
    """outputs: {layer: final file path} (``final``: the model's usual row). One forward pass a batch serves
    every layer. batch_size: images (their captions, for text) a batch, or "auto" (resolve_batch_size).
    perturb: (model input batch, its dataset rows) -> perturbed batch, for an image input perturbation
    (``perturb.image_perturbation``; captions are perturbed in the dataset before); perturbation: its record,
    part of the chunks' fingerprint. Returns {layer: N x D float32 on the CPU} on rank 0, None on the other
    ranks."""
    layers = list(outputs)
    batch_size = resolve_batch_size(batch_size, encoder.device, modality)
    num_workers = resolve_num_workers(num_workers, encoder.device)
    if encoder.spec.batch_one and batch_size != 1:
        _logger.info("%s: its processor pads to the largest image of a batch, so it runs one image a batch",
                     encoder.spec.name)
        batch_size = 1
    n = len(dataset)
    chunks = _chunks(n, chunk_size)
    partials = {layer: _Partial(path, fingerprint(encoder, dataset, modality, chunk_size, precision, layer,
                                                  perturbation))
                for layer, path in outputs.items()}
    for partial in partials.values():
        partial.prepare(rank)
    if world_size > 1:
        dist.barrier()

    def done(k):
        return all(p.done(k) for p in partials.values())

    mine = [k for k in range(len(chunks)) if k % world_size == rank and not done(k)]
    todo_rows = sum(chunks[k][1] - chunks[k][0] for k in mine)
    label = f"{encoder.name} {modality} {dataset.name}" + (f" rank {rank}" if world_size > 1 else "")
    bar = tqdm(total=todo_rows, desc=label, unit="img", disable=not progress, dynamic_ncols=True)

    batches = [(k, b) for k in mine for b in _batches(*chunks[k], batch_size)]
    pending = {k: [] for k in mine}

    def finish(k, rows):  # rows: {layer: B x D}
        pending[k].append({layer: r.float().cpu() for layer, r in rows.items()})
        if sum(r[layers[0]].shape[0] for r in pending[k]) == chunks[k][1] - chunks[k][0]:
            got = pending.pop(k)
            for layer in layers:
                partials[layer].save(k, torch.cat([r[layer] for r in got]))

    with torch.inference_mode(), autocast(encoder.device, precision):
        if modality == "img":
            loader = DataLoader(_Images(dataset.paths, encoder.transform),
                                batch_sampler=[b for _, b in batches], num_workers=num_workers,
                                pin_memory=encoder.device.type == "cuda")
            it = iter(loader)
            for k, b in batches:  # the loader yields batches in this order, workers or not
                try:
                    pixels = next(it)
                except Exception as e:
                    error = _image_error([dataset.paths[i] for i in b], encoder.transform, e)
                    if error is e:
                        raise
                    raise error from None
                x = encoder.prepare(pixels)
                finish(k, encoder.encode("img", x if perturb is None else perturb(x, b), layers))
                bar.update(len(b))
            del it  # shuts the workers down
        else:
            for k, b in batches:
                finish(k, encoder.encode("text", [dataset.captions[i] for i in b], layers))
                bar.update(len(b))
    bar.close()

    if world_size > 1:
        dist.barrier()
    if rank != 0:
        return None
    out = {}
    for layer, partial in partials.items():
        missing = [k for k in range(len(chunks)) if not partial.done(k)]
        if missing:
            raise DataError(f"chunks {missing[:5]} of {outputs[layer]} are missing in {partial.dir}; "
                            f"re-run to finish them")
        out[layer] = torch.cat([partial.load(k) for k in range(len(chunks))])
    return out


def remove_partial(out_path):
    """Delete the chunk files of an output once its final file is written."""
    _Partial(out_path, None).remove()


def extract_class_texts(encoder, dataset, batch_size=32, precision="fp32", progress=True):
    """Text rows of a classification dataset: C x D float32 (CPU), row c the prompt ensemble of class c.

    Row c = mean over the templates t of normalize(embed(t with class c's name)), CLIP's prompt ensembling
    (its notebook then L2-normalises that mean once more; we keep the plain mean, which only rescales each
    row, so cosine similarities are the same). Prompts go through ``encoder.encode_texts`` in batches of
    batch_size.
    """
    n_classes, n_templates = len(dataset.class_names), len(dataset.templates)
    batch_size = resolve_batch_size(batch_size, encoder.device, "text")
    prompts = [p for c in range(n_classes) for p in dataset.prompts(c)]  # class-major: C * T prompts
    bar = tqdm(total=len(prompts), desc=f"{encoder.spec.name} text {dataset.name}", unit="prompt",
               disable=not progress, dynamic_ncols=True)
    out = []
    with torch.inference_mode(), autocast(encoder.device, precision):
        for s in range(0, len(prompts), batch_size):
            rows = encoder.encode_texts(prompts[s:s + batch_size])
            out.append(torch.nn.functional.normalize(rows.float(), dim=-1).cpu())
            bar.update(len(out[-1]))
    bar.close()
    return torch.cat(out).view(n_classes, n_templates, -1).mean(dim=1)

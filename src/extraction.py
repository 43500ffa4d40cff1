"""The one extraction loop: batched, resumable, shardable over torchrun ranks.

Rows are cut into fixed chunks (``chunk_size`` images). Batches never cross a chunk, so a chunk's rows
do not depend on which process computes it or whether the run was resumed. Each finished chunk is saved
atomically in ``.{output}.partial/``; a killed run continues from the chunks already there. With
torchrun, chunk k belongs to rank k % world_size; rank 0 waits for all of them and assembles the rows in
order. The partial folder is removed once the final file is written.

A chunk is reused only for the same inputs: the folder's fingerprint covers the model, its weights, the
dataset's ids, modality, chunking, precision and layer, and each chunk's file name carries the digest of its
own inputs (``chunk_inputs``): the captions' text, or each image file's path, size and modification time.
Captions are hashed in full (cheap); image files by (size, mtime_ns), one stat each: hashing their bytes
would read a 100k-image dataset once more at every start (minutes), while an edited image changes its
mtime. A chunk whose inputs changed is recomputed, the others are kept; ``--overwrite`` discards them all.
One extraction at a time writes an output: ``output_lock`` holds a lock file beside it, so a second
process cannot discard or delete the first one's chunks.

Several outputs of one forward pass (layer taps, ``extract_layers``): each output has its own partial
folder; a chunk counts as done only when every output has it, so a run killed between two saves redoes
that chunk for all of them.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .errors import DataError
from .files import atomic_torch_save, atomic_write_text, load_tensor, write_error
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
    """-j: an int >= 0, or "auto": on the CPU, worker processes decode on the cores the forward pass runs
    on, so they only pay with cores to spare (bench_extract.py, 2 cores, EfficientNet-Lite0 one image a
    batch: 0 workers 52.4, 1 worker 47.7, 2 workers 46.4 images/s, against 50.8 for the paper's loop). With
    0 on the CPU the next batch is loaded between two forward passes, as the paper's loop does: a loading
    thread saves the decoding (a few percent of a step) but takes a core from the forward pass's threads,
    and ran slower in bench_extract.py (docs/speed.md); with 0 on a GPU a thread of this process loads the
    next batch while the device computes (``_thread_batches``). On a GPU up to 4 workers keep it fed."""
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
    """Row i's image (``dataset.open_image(i)``, 8-bit RGB) through the model's transform."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.transform(self.dataset.open_image(i))


def raise_image_error(dataset, indices, transform, error):
    """Raise the DataError for a batch whose loading failed (error: what the loader raised). A worker's
    exception reaches us re-formatted by torch, so the batch's images are retried here, in this process, to
    find the file and its own error; if they all load, the failure was not an image's (e.g. a killed worker)
    and error itself is raised."""
    for i in indices:
        path = dataset.describe_image(i)
        try:
            image = dataset.open_image(i)
        except Exception as e:  # noqa: BLE001 (PIL raises many types for bad files)
            raise DataError(f"image {path} cannot be decoded ({type(e).__name__}: {str(e)[:200]}); fix or "
                            f"remove the file, or re-run with --skip-missing to drop such images") from None
        try:
            transform(image)
        except Exception as e:  # noqa: BLE001 (the model's preprocessing refused it: size, mode, ...)
            raise DataError(f"image {path} decodes but the model's preprocessing fails on it "
                            f"({type(e).__name__}: {str(e)[:200]}); fix the file (e.g. save it as an ordinary "
                            f"RGB JPEG) or remove it from the images and the captions json") from None
    raise error

def _collate(images):
    """The batch tensor of a list of C x H x W images: the image itself, viewed as 1 x C x H x W, for one."""
    return images[0][None] if len(images) == 1 else torch.stack(images)


def _thread_batches(dataset, batches):
    """The collated batches of dataset (a map of index -> image tensor), in order, each loaded one batch
    ahead in one thread of this process: decoding and resizing release the GIL, so they overlap the
    forward pass (what DataLoader workers do, without processes to start and feed; -j 0). A loading error
    is raised where that batch is asked for, as the DataLoader does."""
    def load(batch):
        return _collate([dataset[i] for i in batch])

    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(load, batches[0]) if batches else None
        for j in range(len(batches)):
            pixels = ahead.result()
            if j + 1 < len(batches):
                ahead = pool.submit(load, batches[j + 1])
            yield pixels


def _chunks(n, chunk_size):
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _batches(start, end, batch_size):
    return [list(range(s, min(s + batch_size, end))) for s in range(start, end, batch_size)]


class _Partial:
    """Chunk files of one output, valid only for the same model, rows, modality and chunking (the folder's
    fingerprint) and, chunk by chunk, for the same inputs (the digest in each chunk's name)."""

    def __init__(self, out_path, fingerprint, digests=None):
        self.out = Path(out_path)
        self.dir = self.out.parent / f".{self.out.name}.partial"
        self.fingerprint, self.digests = fingerprint, digests

    def prepare(self, rank, fresh=False):
        """Rank 0: discard the folder when it was made for another fingerprint, or with fresh (--overwrite);
        remove the chunks whose inputs changed since they were saved."""
        meta = self.dir / "meta.json"
        if rank != 0:
            return
        if fresh and self.dir.exists():
            _logger.info("--overwrite: discarding the saved chunks in %s", self.dir)
            shutil.rmtree(self.dir)
        if meta.is_file():
            try:
                old = json.loads(meta.read_text()).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                old = None
            if old != self.fingerprint:
                _logger.warning("discarding %s: its chunks were made with other options (model, weights, precision, "
                                "BatchNorm folding, data or chunk size)", self.dir)
                shutil.rmtree(self.dir)
        elif self.dir.is_dir() and any(self.dir.iterdir()):
            _logger.warning("discarding %s: it has no meta.json (not a folder this code made)", self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps({"fingerprint": self.fingerprint}) + "\n")
        current = {self.path(k).name for k in range(len(self.digests))}
        stale = [p for p in self.dir.glob("chunk_*.pt") if p.name not in current]
        if stale:
            _logger.warning("%s: %d saved chunk(s) were made from other inputs (captions or images changed "
                            "since); they are recomputed", self.dir, len(stale))
            for p in stale:
                p.unlink()

    def path(self, k):
        return self.dir / f"chunk_{k:06d}_{self.digests[k][:16]}.pt"

    def done(self, k):
        return self.path(k).is_file()

    def save(self, k, rows):
        atomic_torch_save(rows.contiguous(), self.path(k))

    def load(self, k, n_rows):
        """Chunk k, checked to be n_rows rows; a DataError that names the file, its folder and the fix."""
        path = self.path(k)
        fix = (f"delete it (rm {shlex.quote(str(path))}) and re-run the same command: only that chunk is "
               f"computed again (or re-run with --overwrite to start {self.out.name} over)")
        try:
            rows = load_tensor(path)
        except DataError as e:
            raise DataError(f"chunk {k} of {self.out} in the resume folder {self.dir}: {e}; {fix}") from None
        if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[0] != n_rows:
            raise DataError(f"chunk {k} of {self.out} in the resume folder {self.dir}: {path.name} is not a "
                            f"{n_rows}-row tensor; {fix}")
        return rows

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def chunk_inputs(dataset, modality, chunks):
    """sha1 of each chunk's inputs: its ids and captions' text (text), or its ids and each image file's path,
    size and mtime_ns (images: one stat a file, see the module's doc)."""
    digests = []
    for start, end in chunks:
        if modality == "text":
            key = [[str(dataset.ids[i]), dataset.captions[i]] for i in range(start, end)]
        else:
            key = []
            for i in range(start, end):
                if dataset.paths is None:  # images inside a dataset object (tv:): its row, as it describes it
                    key.append([str(dataset.ids[i]), dataset.describe_image(i)])
                    continue
                try:
                    st = os.stat(dataset.paths[i])
                    key.append([str(dataset.ids[i]), str(dataset.paths[i]), st.st_size, st.st_mtime_ns])
                except OSError:  # the loader names a missing file when it reaches it
                    key.append([str(dataset.ids[i]), str(dataset.paths[i]), None, None])
        digests.append(hashlib.sha1(json.dumps(key).encode()).hexdigest())
    return digests


@contextlib.contextmanager
def output_lock(paths):
    """Hold an exclusive lock file beside each output (``.{name}.lock``) while it is extracted: a second
    get_embeds.py writing the same output is refused at once, instead of discarding or deleting this one's
    chunks. The lock goes with the process (flock), so a killed run leaves no lock that blocks the next."""
    held = []
    try:
        for path in sorted(Path(p) for p in paths):
            lock = path.parent / f".{path.name}.lock"
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                handle = open(lock, "a+")
            except OSError as e:
                raise write_error(lock, e) from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                who = handle.read().strip() or "another process"
                handle.close()
                raise DataError(f"{path} is being extracted right now by another get_embeds.py ({who}; lock file "
                                f"{lock}); wait for it to finish, then re-run this command (it skips the files "
                                f"that are done)") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            held.append(handle)
        yield
    finally:
        for handle in held:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def fingerprint(encoder, dataset, modality, chunk_size, precision, layer=FINAL, perturbation=None):
    key = [encoder.name, str(encoder.source), dataset.name, list(map(str, dataset.ids)), modality, chunk_size,
           precision] + ([] if layer == FINAL else [layer])  # final keeps the fingerprint it always had
    if perturbation is not None:  # another seed's chunks are not this file's
        key.append(perturbation)
    if modality == "img" and encoder.folded_batchnorm:  # rows rounded otherwise than the unfolded model's
        key.append(["folded_batchnorm", encoder.folded_batchnorm])
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()


def extract(encoder, dataset, modality, out_path, batch_size=32, num_workers=4, precision="fp32",
            chunk_size=512, rank=0, world_size=1, progress=True, fresh=False):
    """Embeddings (N x D float32, on the CPU) of one modality; None on ranks other than 0."""
    rows = extract_layers(encoder, dataset, modality, {FINAL: out_path}, batch_size, num_workers, precision,
                          chunk_size, rank, world_size, progress, fresh)
    return None if rows is None else rows[FINAL]


def extract_layers(encoder, dataset, modality, outputs, batch_size=32, num_workers=4, precision="fp32",
                   chunk_size=512, rank=0, world_size=1, progress=True, fresh=False, perturb=None,
                   perturbation=None):
    """outputs: {layer: final file path} (``final``: the model's usual row). One forward pass a batch serves
    every layer. batch_size: images (their captions, for text) a batch, or "auto" (resolve_batch_size).
    fresh (--overwrite): discard the chunks a killed run saved. perturb: (model input batch, its dataset rows)
    -> perturbed batch, for an image input perturbation (``perturb.image_perturbation``; captions are
    perturbed in the dataset before); perturbation: its record, part of the chunks' fingerprint. Returns
    {layer: N x D float32 on the CPU} on rank 0, None on the other ranks."""
    layers = list(outputs)
    batch_size = resolve_batch_size(batch_size, encoder.device, modality)
    num_workers = resolve_num_workers(num_workers, encoder.device)
    if encoder.spec.batch_one and batch_size != 1:
        _logger.info("%s: its processor pads to the largest image of a batch, so it runs one image a batch",
                     encoder.spec.name)
        batch_size = 1
    n = len(dataset)
    chunks = _chunks(n, chunk_size)
    digests = chunk_inputs(dataset, modality, chunks)
    partials = {layer: _Partial(path, fingerprint(encoder, dataset, modality, chunk_size, precision, layer,
                                                  perturbation), digests)
                for layer, path in outputs.items()}
    for partial in partials.values():
        partial.prepare(rank, fresh)
    if world_size > 1:
        dist.barrier()

    def done(k):
        return all(p.done(k) for p in partials.values())

    mine = [k for k in range(len(chunks)) if k % world_size == rank and not done(k)]
    todo_rows = sum(chunks[k][1] - chunks[k][0] for k in mine)
    label = f"{encoder.name} {modality} {dataset.name}" + (f" rank {rank}" if world_size > 1 else "")
    bar = tqdm(total=todo_rows, desc=label, unit="img", disable=not progress, dynamic_ncols=True)

    batches = [(k, b) for k in mine for b in _batches(*chunks[k], batch_size)]
    pending, filled = {k: [] for k in mine}, dict.fromkeys(mine, 0)

    def finish(k, rows):  # rows: {layer: B x D float32 (encode's)}, copied off the device once
        pending[k].append({layer: r.cpu() for layer, r in rows.items()})
        filled[k] += rows[layers[0]].shape[0]
        if filled[k] == chunks[k][1] - chunks[k][0]:
            got = pending.pop(k)
            for layer in layers:
                partials[layer].save(k, torch.cat([r[layer] for r in got]))

    with torch.inference_mode(), autocast(encoder.device, precision):
        if modality == "img":
            images = _Images(dataset, encoder.transform)
            if num_workers == 0 and encoder.device.type == "cpu":  # see resolve_num_workers
                loader = (_collate([images[i] for i in b]) for _, b in batches)
            elif num_workers == 0:
                loader = _thread_batches(images, [b for _, b in batches])
            else:
                loader = DataLoader(images, batch_sampler=[b for _, b in batches], num_workers=num_workers,
                                    pin_memory=encoder.device.type == "cuda")
            it = iter(loader)
            for k, b in batches:  # the loader yields batches in this order, workers or not
                try:
                    pixels = next(it)
                except Exception as e:
                    raise_image_error(dataset, b, encoder.transform, e)
                x = encoder.prepare(pixels)
                finish(k, encoder.encode("img", x if perturb is None else perturb(x, b), layers))
                bar.update(len(b))
            del it  # shuts the workers (or the loading thread) down
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
        out[layer] = torch.cat([partial.load(k, end - start) for k, (start, end) in enumerate(chunks)])
    return out


def remove_partial(out_path):
    """Delete the chunk files of an output once its final file is written."""
    _Partial(out_path, None).remove()


def extract_class_texts(encoder, dataset, batch_size=32, precision="fp32", progress=True):
    """Text rows of a classification dataset: C x D float32 (CPU), row c the mean of the L2-normalised
    embeddings of class c's texts (``dataset.class_texts(c)``: its prompts, or its descriptions).

    With templates this is CLIP's prompt ensembling (its notebook then L2-normalises that mean once more; we
    keep the plain mean, which only rescales each row, so cosine similarities are the same); with
    descriptions, EX2's class representation (the mean over a class's descriptions). Texts go through
    ``encoder.encode_texts`` in batches of batch_size, class after class (a batch may span classes).
    """
    batch_size = resolve_batch_size(batch_size, encoder.device, "text")
    per_class = [dataset.class_texts(c) for c in range(len(dataset.class_names))]
    texts = [t for ts in per_class for t in ts]
    bar = tqdm(total=len(texts), desc=f"{encoder.spec.name} text {dataset.name}", unit="text",
               disable=not progress, dynamic_ncols=True)
    out = []
    with torch.inference_mode(), autocast(encoder.device, precision):
        for s in range(0, len(texts), batch_size):
            rows = encoder.encode_texts(texts[s:s + batch_size])
            out.append(torch.nn.functional.normalize(rows.float(), dim=-1).cpu())
            bar.update(len(out[-1]))
    bar.close()
    rows, counts = torch.cat(out), [len(ts) for ts in per_class]
    if len(set(counts)) == 1:  # every class the same number of texts (templates): one reshape, as always
        return rows.view(len(counts), counts[0], -1).mean(dim=1)
    return torch.stack([g.mean(dim=0) for g in torch.split(rows, counts)])

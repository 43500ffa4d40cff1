"""The commands that messages give (how to make or re-make a file): get_embeds.py and cluster.py command lines,
built from what the sidecars on disk say. Messages only: nothing here reads or writes data, and files.py (the
on-disk layer) does not import it; the scripts' sides (src/sides.py, cluster.py) pass these hints to its
loaders as ``fix=``."""
import glob
import shlex
from pathlib import Path

from .errors import DataError, UsageError
from .files import read_sidecar
from .names import dataset_tag, parse_model


def get_embeds_command(dataset, model, path=None, perturbation=None, kind_from=None):
    """The command that writes an embeddings file. ``path``: that file, to name its folder (--data-dir when
    it is not data/), to read its sidecar (a classification dataset takes --images ROOT alone; its class
    texts may come from --descriptions) and, when it exists but is unusable, to add --overwrite (without it
    get_embeds.py would skip the file). ``perturbation``: an input perturbation's ``KIND:LEVEL`` (--perturb);
    ``kind_from``: another file of the dataset whose sidecar says its kind (the unperturbed one, when the
    perturbed file does not exist yet)."""
    cmd = f"python get_embeds.py --m {shlex.quote(str(model))} --d {shlex.quote(str(dataset))}"
    side = None
    for known in (path, kind_from):
        if known is not None and side is None:
            try:
                side = read_sidecar(known)
            except DataError:
                pass
    variant = False
    if side is None and path is not None:  # a file not made yet: another file of the dataset says its kind
        side, variant = _sibling_sidecar(Path(path).parent, str(dataset))
    classes = side is not None and side.task_data == "classes"
    if str(dataset).startswith("tv:"):
        cmd += " --images ROOT"  # or TORCHVISION_ROOT
    elif dataset not in ("coco", "nocaps"):
        cmd += " --images ROOT" if classes else " --images DIR --captions FILE"
    if classes and side.classes_file:  # class names from a file, not from the folders
        cmd += f" --classes {shlex.quote(side.classes_file)}"
    if classes and variant:  # DATA-VARIANT: other class texts over DATA's images
        cmd += " --descriptions FILE.json"
    elif classes and side.descriptions_file:
        cmd += f" --descriptions {shlex.quote(side.descriptions_file)}"
    if perturbation is not None:
        cmd += f" --perturb {perturbation}"
    if path is not None:
        if Path(path).parent != Path("data"):
            cmd += f" --data-dir {shlex.quote(str(Path(path).parent))}"
        if Path(path).exists():
            cmd += " --overwrite"
    return cmd


def _sibling_sidecar(folder, dataset):
    """(an embeddings sidecar of another file of ``dataset`` in folder, or for DATA-VARIANT of DATA's; whether it
    is DATA's), or (None, False): whether the dataset is a captions or a classification one."""
    names = [dataset] + ([dataset.rsplit("-", 1)[0]] if "-" in dataset else [])
    for i, name in enumerate(names):
        for found in sorted(Path(folder).glob(f"{glob.escape(dataset_tag(name))}_*.json")):
            try:
                side = read_sidecar(found.with_suffix(".pt"))
            except DataError:
                continue
            if side is not None and side.kind == "embeddings" and side.dataset == name:
                return side, i > 0
    return None, False


def make_hint(dataset, model, path, perturbation=None, kind_from=None):
    """How to make (again) the embeddings file ``path``: the get_embeds.py command, or, for a model that
    get_embeds.py does not know (a file made elsewhere), where to put it: never a command that is refused."""
    from .encoders import get_spec  # the registry, only for this message
    try:
        get_spec(parse_model(model).base)
    except UsageError:
        return (f"{model} is not a model get_embeds.py knows (python get_embeds.py --help lists them), so this "
                f"file was made elsewhere: make it again the way it was made, as {path}")
    return f"make it with: {get_embeds_command(dataset, model, path, perturbation, kind_from)}"


def cluster_command(dataset, model, modality, n_clusters, data_dir="data", perturbation=None):
    cmd = (f"python cluster.py --m {shlex.quote(str(model))} --d {shlex.quote(str(dataset))} --nc {n_clusters}"
           + (" -t" if modality == "text" else "") + (f" --perturb {perturbation}" if perturbation else ""))
    return cmd + (f" --data-dir {shlex.quote(str(data_dir))}" if Path(data_dir) != Path("data") else "")

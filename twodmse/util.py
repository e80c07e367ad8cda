"""Small shared helpers: user errors, option checks, locked output folders, atomic writes, content hashes,
provenance records."""
import argparse
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# Writes that fail for these reasons are the machine's state, not a bug: full disk, quota, read-only, permissions,
# a file where a folder should be.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}
LOCK_NAME = ".twodmse.lock"


class UserError(Exception):
    """A mistake in what the user gave or in the machine's state (a flag, a config key, a file, a full disk).

    Its message names the culprit and the fix; the command line prints it alone and exits 2. Any other exception
    is a bug and keeps its traceback."""


def disk_error(e, path):
    """An OSError from writing `path` -> a UserError naming the path, or None when it is not the disk's fault."""
    if not isinstance(e, OSError) or e.errno not in WRITE_ERRNOS:
        return None
    return UserError(f"cannot write {e.filename or path}: {e.strerror}. Fix: {_write_fix(e, 'output folder')}")


def _write_fix(e, what):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space there or choose another {what}"
    return f"choose another {what}, one you can write to"


# ------------------------------------------------------------------ options

def int_list(text):
    """'384,128,32' -> [384, 128, 32]: the one parser of comma-separated integer options (argparse type)."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 384,128,32, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got '{text}'")
    return values


def positive_int(text):
    """argparse type of counts and sizes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{text}'")
    return value


def check_cells(values, top, what, flag):
    """Layers (1..L) or widths (1..H) a user asked for: in range and each once, else a UserError naming `flag`."""
    bad = [v for v in values if not 1 <= v <= top]
    if bad:
        raise UserError(f"{flag}: {what} {bad} out of range; this model has {what} 1..{top}")
    twice = sorted({v for v in values if list(values).count(v) > 1})
    if twice:
        raise UserError(f"{flag}: {what} {twice} given more than once; list each once")
    return list(values)


def check_device(device, flag="--device"):
    """'cpu', 'cuda', 'cuda:1', ... or None (= cuda when available) -> a device torch can use here."""
    import torch
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag}: '{device}' is not a device; use cpu, cuda or cuda:N") from None
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{flag}: '{device}' asked for, but torch sees no CUDA GPU here; use cpu "
                            "(or leave it unset: cuda when available)")
        if kind.index is not None and kind.index >= count:
            raise UserError(f"{flag}: '{device}' asked for, but torch sees {count} GPU(s): cuda:0..cuda:{count - 1}")
    elif kind.type != "cpu" and not getattr(getattr(torch.backends, kind.type, None), "is_available", bool)():
        raise UserError(f"{flag}: '{device}' is not available here; use cpu")
    return device


# ------------------------------------------------------------------ output folders

def default_cache_dir():
    """The one cache root of every command (embeddings, assembled offline models): $TWODMSE_CACHE."""
    return Path(os.environ.get("TWODMSE_CACHE", Path.home() / ".cache" / "twodmse"))


def check_writable(folder, flag):
    """Up front: the folder exists or can be made, and a file can be written in it; else a UserError naming flag."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise UserError(f"{flag} {folder}: cannot write there ({e.strerror}). "
                        f"Fix: {_write_fix(e, f'{flag} folder')}") from None
    return Path(folder)


@contextlib.contextmanager
def output_lock(folder, flag="--out"):
    """Hold FOLDER/.twodmse.lock while a run writes FOLDER, so two runs never interleave their outputs.

    Creating the folder and the lock file is also the up-front check that the folder is writable. The lock is an
    flock on that file (the kernel drops it when the process dies, however it dies); the file holds the holder's
    PID, host and command so a second run can say who holds it. A file left by a killed run holds no lock: the
    next run takes it over."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(f"{flag} {folder} is being written by another run ({_describe(holder)}); wait for it "
                                f"to finish, stop it, or choose another {flag}") from None
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not removed by its last holder meanwhile
                    break
            os.close(fd)
    except OSError as e:
        raise disk_error(e, path) or e
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
          "since": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder):
    if not holder:
        return "its details are not written yet"
    return f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"


def atomic_write(path, write, folder=False):
    """Call write(tmp) then rename tmp onto path, so a reader (or a run killed at any moment) never sees half a
    file or folder; the one way this package writes its outputs.

    folder=True: tmp is a folder (PATH's sibling .NAME.tmp), swapped in through .NAME.old; a kill between the
    two renames leaves the complete old copy there (checkpoint.load falls back to it). If write fails, tmp is
    removed, and a full or read-only disk becomes a UserError naming path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
    except OSError as e:
        raise disk_error(e, path) or e
    try:
        write(tmp)
    except BaseException as e:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            Path(tmp).unlink(missing_ok=True)
        raise _write_failure(e, path, tmp) or e
    try:
        if folder:
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise disk_error(e, path) or e
    return path


# torch.save reports a full disk as "[enforce fail at inline_container.cc:...] . unexpected pos ..."
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def _write_failure(e, path, tmp):
    """A UserError for a write the disk refused (OSError, or torch's RuntimeError), else None."""
    if isinstance(e, OSError):
        return disk_error(e, path)
    if isinstance(e, RuntimeError) and any(m in str(e) for m in TORCH_WRITE_FAILURES):
        free = free_bytes(path)
        return UserError(f"cannot write {path}: the disk refused the write ({free / 1e6:.1f} MB free there); the "
                         f"partial {Path(tmp).name} was removed. Fix: free space, then rerun the same command")
    return None


def free_bytes(path):
    """Free space where a write to path lands: on path, or on its nearest folder that exists."""
    path = Path(path).absolute()
    return shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free


def write_text(path, text):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path, df):
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def content_hash(folder, n=16):
    """Hash of every file's name and bytes under folder: changes whenever the checkpoint does."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:n]


def git_commit():
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware():
    import torch
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def versions():
    from importlib import metadata
    out = {"python": platform.python_version()}
    for pkg in ("twodmse", "torch", "transformers", "numpy", "scipy", "pandas", "mteb",
                "sentence-transformers", "snakemake"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# The variables that put the Hugging Face stack offline (huggingface_hub, transformers, datasets). Any one set to
# 1/true/yes/on puts all of twodmse offline: models, datasets and MTEB tasks alike.
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_offline():
    """The name of the first of HUB_OFFLINE_VARS that is set on (1/true/yes/on, any case), or None."""
    return next((v for v in HUB_OFFLINE_VARS
                 if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")), None)


def hub_reachable(timeout=3):
    """Whether the Hugging Face hub can be used: no offline variable is set and its host ($HF_ENDPOINT, default
    https://huggingface.co) accepts a connection within `timeout` seconds. One quick probe, so that a machine
    without internet gives up at once instead of waiting in the hub clients' retry loops."""
    if hub_offline():
        return False
    from urllib.parse import urlsplit
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if not url.hostname:
        return False
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout).close()
        return True
    except (OSError, ValueError):  # ValueError: a malformed port in HF_ENDPOINT
        return False


def provenance(config=None, **extra):
    """Everything needed to tell where a result came from."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "hardware": hardware(), "versions": versions(),
            "config": config or {}, **extra}

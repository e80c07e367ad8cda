import os

import pytest

# Tests never touch the network: the hub is unreachable here and in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_bert(tmp_path):
    from twodmse.backbone import make_tiny
    return make_tiny(tmp_path / "tiny-bert", layers=3, hidden=32)



@pytest.fixture
def tiny_mpnet(tmp_path):
    """A random MPNet (pad id 1, relative position bias shared by the layers): all-mpnet-base-v2's architecture,
    so a test can check that nothing assumes BERT's internals without the 404 MB model."""
    from twodmse.backbone import make_tiny
    return make_tiny(tmp_path / "tiny-mpnet", layers=3, hidden=32, arch="mpnet")


@pytest.fixture(params=["bert", "mpnet"])
def tiny_bert_and_mpnet(request, tmp_path):
    """The tiny BERT, then the tiny MPNet: a test that takes it runs on both architectures."""
    from twodmse.backbone import make_tiny
    return make_tiny(tmp_path / f"tiny-{request.param}", layers=3, hidden=32, arch=request.param)

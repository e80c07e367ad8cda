import os

import pytest

# Tests never touch the network: the hub is unreachable here and in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_bert(tmp_path):
    from twodmse.backbone import make_tiny
    return make_tiny(tmp_path / "tiny-bert", layers=3, hidden=32)


"""twodmse.util's hub checks (one offline switch and one probe for models, datasets and MTEB tasks), and the test
suite's own rule for missing inputs (tests/needs.py: a skip with its reason, a failure under CI=true)."""
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import needs
from twodmse import backbone, data, util

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def online(monkeypatch):
    """No offline variable set; any real connection attempt fails the test."""
    for var in util.HUB_OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    def forbidden(*a, **k):
        raise AssertionError("the network was contacted")
    monkeypatch.setattr(socket, "create_connection", forbidden)
    return monkeypatch


def test_hub_offline_names_the_variable_that_is_on(online):
    assert util.HUB_OFFLINE_VARS == ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    assert util.hub_offline() is None
    for value in ("0", "false", "no", "off", ""):
        online.setenv("TRANSFORMERS_OFFLINE", value)
        assert util.hub_offline() is None, value
    for var in util.HUB_OFFLINE_VARS:
        for value in ("1", "TRUE", " yes ", "On"):
            online.setenv(var, value)
            assert util.hub_offline() == var, (var, value)
        online.delenv(var)
    online.setenv("HF_DATASETS_OFFLINE", "1")
    online.setenv("HF_HUB_OFFLINE", "1")
    assert util.hub_offline() == "HF_HUB_OFFLINE"  # the first of HUB_OFFLINE_VARS


def test_hub_reachable_probes_the_endpoint_once_and_never_when_offline(online):
    calls = []

    def connect(address, timeout):
        calls.append((address, timeout))
        return socket.socket()  # closed at once by the probe
    online.setattr(socket, "create_connection", connect)
    assert util.hub_reachable(timeout=2) is True
    assert calls == [(("huggingface.co", 443), 2)]
    online.setenv("HF_ENDPOINT", "http://mirror.local:8080/hf")
    assert util.hub_reachable() is True and calls[-1] == (("mirror.local", 8080), 3)
    online.setenv("HF_ENDPOINT", "hf-mirror.com")  # no scheme: https
    assert util.hub_reachable() is True and calls[-1] == (("hf-mirror.com", 443), 3)
    online.setenv("HF_ENDPOINT", "https://")  # no host: never a connection to localhost
    assert util.hub_reachable() is False and len(calls) == 3
    online.delenv("HF_ENDPOINT")
    for var in util.HUB_OFFLINE_VARS:
        online.setenv(var, "1")
        assert util.hub_reachable() is False
        online.delenv(var)
    assert len(calls) == 3  # offline: no probe at all

    def refused(address, timeout):
        raise OSError("[Errno 111] Connection refused")
    online.setattr(socket, "create_connection", refused)
    assert util.hub_reachable() is False


@pytest.mark.parametrize("var", util.HUB_OFFLINE_VARS)
def test_every_offline_variable_stops_models_datasets_and_mteb_alike(var, online):
    online.setenv(var, "1")
    with pytest.raises(backbone.BackboneNotFound, match=rf"hub is disabled \({var}=1\)"):
        backbone.resolve("no-such-org/no-such-model")
    with pytest.raises(data.HubUnavailable, match=rf"mteb/sts12-sts from the Hugging Face hub \({var}=1\)"):
        data.load_eval("sts12", source="hub")
    needs.module("mteb", "pip install 'twodmse[mteb]'")
    from twodmse import mteb_eval
    tasks, skipped = mteb_eval.build_tasks(["Banking77Classification"])
    assert tasks == [] and "the hub is offline or unreachable" in skipped["Banking77Classification"]


# ---------------------------------------------------------------- tests/needs.py


def test_pytest_lists_every_skip_with_its_reason():
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-ra" in addopts.split()


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_input_skips_with_its_reason_but_fails_under_ci(ci, tmp_path):
    (tmp_path / "test_x.py").write_text("import needs\n\n"
                                        "def test_needs_a_widget():\n"
                                        "    needs.missing('no widget on this machine')\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if ci:
        assert run.returncode == 1 and "1 failed" in run.stdout
        assert "no widget on this machine (CI=true: CI provides this" in run.stdout
    else:
        assert run.returncode == 0 and "1 skipped" in run.stdout
        assert re.search(r"^SKIPPED \[1\] \S+: no widget on this machine$", run.stdout, re.M), run.stdout

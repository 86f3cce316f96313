"""Export / load round trip: fp16 storage, fp32 compute, SHA-256 check, names, run dirs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from blindinpaint import hub
from blindinpaint.cli import main
from blindinpaint.errors import UserError
from blindinpaint.train import train
from blindinpaint.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import TinyModelConfig, TinyNet, make_cfg  # noqa: E402  (registers the dummy tasks)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hub") / "run"
    train(make_cfg(run, steps=4, ema=0.5, val_every=2))
    return run


@pytest.fixture
def tiny_registry(monkeypatch):
    """``tiny_net`` in blindinpaint.models.registry.MODELS for the duration of a test."""
    from blindinpaint.models import registry

    monkeypatch.setitem(registry.MODELS, "tiny_net", lambda cfg: TinyNet(TinyModelConfig(**cfg)))
    return registry.MODELS


def test_export_writes_fp16_safetensors_and_config(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["task"] == "dummy_denoise" and meta["model"] == "tiny_net" and meta["dtype"] == "float16"
    assert meta["model_config"] == {"width": 8, "dropout": 0.1, "nan_at": -1}
    assert meta["training"]["step"] == 4 and meta["training"]["ema"] is True
    assert "l1" in meta["training"]["val"] and "root" not in meta["data"] and meta["data"]["size"] == 256
    assert meta["sha256"]["model.safetensors"] == hub.sha256_file(out / "model.safetensors")
    stored = load_file(str(out / "model.safetensors"))
    assert set(stored) == {"body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias"}
    assert all(v.dtype == torch.float16 for v in stored.values())

    loaded = hub.load(out)
    ema = load_checkpoint(latest_checkpoint(run_dir))["ema"]["net"]
    for key, value in loaded.state_dict.items():
        assert value.dtype == torch.float32                      # compute in fp32
        assert torch.allclose(value, ema[key], rtol=1e-3, atol=1e-4)   # EMA weights, fp16-rounded


def test_fp32_export_and_run_dir_load_are_exact(run_dir, tmp_path):
    out = hub.export(run_dir, tmp_path / "e32", fp16=False, use_ema=False)
    weights = load_checkpoint(latest_checkpoint(run_dir))["modules"]["net"]
    from_export = hub.load(out).state_dict
    from_run = hub.load(run_dir).state_dict                      # a run directory loads too (EMA)
    assert all(torch.equal(from_export[k], weights[k]) for k in weights)
    assert hub.load(run_dir).meta["training"]["ema"] is True and set(from_run) == set(weights)


def test_tampered_weights_fail_the_checksum(run_dir, tmp_path):
    out = hub.export(run_dir, tmp_path / "e")
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-3] ^= 0x55
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged or was modified: SHA-256"):
        hub.load(out)


def test_names_resolve_in_the_user_folder(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    hub.export(run_dir, tmp_path / "home" / "mini")
    assert hub.load("mini").meta["task"] == "dummy_denoise"
    listed = {m["name"]: m for m in hub.list_models()}
    assert listed["mini"]["source"] == "user" and listed["mini"]["task"] == "dummy_denoise"
    with pytest.raises(UserError, match="no model 'nonexistent'.*mini"):
        hub.load("nonexistent")


def test_build_model_runs_the_exported_weights(run_dir, tmp_path, tiny_registry):
    out = hub.export(run_dir, tmp_path / "e")
    model = hub.build_model(hub.load(out))
    assert not model.training
    x = torch.rand(1, 3, 8, 8)
    reference = TinyNet(TinyModelConfig())
    reference.load_state_dict(load_checkpoint(latest_checkpoint(run_dir))["ema"]["net"])
    reference.eval()
    assert torch.allclose(model(x), reference(x), atol=2e-3)
    tiny_registry["tiny_net"] = lambda cfg: TinyNet(TinyModelConfig(width=4))
    with pytest.raises(UserError, match="do not fit this model"):
        hub.build_model(hub.load(out))


def test_drop_refiner_needs_an_hcl_model(run_dir, tmp_path):
    with pytest.raises(UserError, match="not an HCL model"):
        hub.export(run_dir, tmp_path / "e", drop_refiner=True)


def test_values_beyond_fp16_stay_fp32():
    stored, dtype = hub._storage({"big": torch.tensor([1e6, 1.0]), "small": torch.tensor([0.5]),
                                  "index": torch.tensor([3])}, fp16=True)
    assert dtype == "float16" and stored["big"].dtype == torch.float32 and stored["big"][0] == 1e6
    assert stored["small"].dtype == torch.float16 and stored["index"].dtype == torch.int64


def test_bundled_models_load_by_name_and_match_their_sha256():
    import inspect as pyinspect

    import blindinpaint
    from blindinpaint import Restorer

    bundled = {m["name"]: m for m in hub.list_models() if m["source"] == "bundled"}
    assert {"default", "gdn"} <= set(bundled)
    total = 0
    for name in ("default", "gdn"):
        folder = hub.BUNDLED_DIR / name
        meta = json.loads((folder / hub.CONFIG_FILE).read_text())
        assert meta["sha256"][hub.WEIGHTS_FILE] == hub.sha256_file(folder / hub.WEIGHTS_FILE)
        total += sum(p.stat().st_size for p in folder.iterdir())
        assert hub.load(name).task == bundled[name]["task"]
    assert total <= 25 * 2 ** 20                                  # issue 8: <= 25 MB in the package
    gdn = Restorer.from_pretrained("gdn", device="cpu")
    assert gdn.can_inspect and not gdn.blind                      # generator + dense detector shipped
    assert pyinspect.signature(blindinpaint.inpaint).parameters["model"].default == "gdn"

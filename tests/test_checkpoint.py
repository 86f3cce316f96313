"""Checkpoints: weights_only loading, atomic writes under SIGKILL, last K + best, RNG states."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blindinpaint.errors import UserError
from blindinpaint.train import train
from blindinpaint.train.checkpoint import (CheckpointManager, atomic_save, best_checkpoint, latest_checkpoint,
                                           load_checkpoint, resolve_resume, rng_state, set_rng_state,
                                           step_checkpoints)

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import SRC, make_cfg  # noqa: E402  (registers the dummy tasks)

PRIMITIVES = (int, float, str, bool, type(None))


def assert_plain(obj, where="ckpt"):
    """Only tensors, primitives, and dicts / lists / tuples of them."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            assert_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(obj, (torch.Tensor, *PRIMITIVES)), f"{where} is a {type(obj).__name__}"


def test_trainer_checkpoint_loads_with_weights_only_and_holds_plain_data(tmp_path):
    train(make_cfg(tmp_path / "run", "dummy_gan", steps=4, ema=0.9, val_every=2))
    path = latest_checkpoint(tmp_path / "run")
    ckpt = torch.load(path, weights_only=True)
    assert_plain(ckpt)
    assert ckpt["step"] == 4 and ckpt["task"] == "dummy_gan" and ckpt["config"]["train"]["steps"] == 4
    assert isinstance(ckpt["rng"][0]["torch"], torch.Tensor) and ckpt["rng"][0]["torch"].dtype == torch.uint8
    assert set(ckpt["modules"]) == {"gen", "critic"} and set(ckpt["ema"]) == {"gen"}
    assert ckpt["export"] == {"model": "tiny_net", "config": {"width": 8, "dropout": 0.1, "nan_at": -1},
                              "modules": {"": "gen"}, "extra": {}}


def test_rng_state_round_trip():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    set_rng_state(torch.load(_roundtrip(state), weights_only=True))
    second = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2] and first[3] == second[3]


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_keep_last_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, metric="l1", mode="min")
    values = {1: 0.5, 2: 0.3, 3: 0.4, 4: 0.35, 5: 0.6}
    for step, value in values.items():
        improved = manager.improves({"l1": value})
        if improved:
            manager.best_value = value
        manager.save({"format": "blindinpaint-checkpoint", "step": step}, step, best=improved)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000005.pt"]
    assert load_checkpoint(best_checkpoint(tmp_path))["step"] == 2     # survives pruning of step 2
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 5
    assert not manager.improves({"psnr": 1.0})   # metric not reported: no best


def test_resume_resolution(tmp_path):
    assert resolve_resume("", tmp_path) is None
    assert resolve_resume("latest", tmp_path) is None          # nothing yet: a fresh start
    with pytest.raises(UserError, match="no such run directory or checkpoint"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(UserError, match="no latest checkpoint"):
        resolve_resume(str(tmp_path), tmp_path)


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    atomic_save({"hello": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a blindinpaint training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_sigkill_while_saving_keeps_the_previous_checkpoint_loadable(tmp_path):
    """A writer killed at an arbitrary moment (most of its time is spent inside torch.save)."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(SRC)!r})
        from blindinpaint.train.checkpoint import CheckpointManager
        manager = CheckpointManager(sys.argv[1], keep_last=2, metric="l1")
        big = torch.randn(4_000_000)       # 16 MB per save
        step = 0
        while True:
            step += 1
            big[0] = step
            manager.save({{"format": "blindinpaint-checkpoint", "step": step, "w": big}}, step)
            print(step, flush=True)
    """))
    for run, delay in ((tmp_path / "a", 0.5), (tmp_path / "b", 0.87)):
        proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()          # at least one save finished
        time.sleep(delay)
        deadline = time.time() + 10                    # kill while a temp file is being written
        while not list((run / "checkpoints").glob(".tmp-*")) and time.time() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ckpt = load_checkpoint(latest_checkpoint(run))
        assert ckpt["w"][0].item() == ckpt["step"] >= 1 and ckpt["w"].numel() == 4_000_000
        manager = CheckpointManager(run, keep_last=2, metric="l1")
        manager.remove_stale_temps()
        assert not list((run / "checkpoints").glob(".tmp-*"))

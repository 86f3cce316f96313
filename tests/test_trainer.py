"""The model-agnostic trainer with two tiny dummy Tasks (no HCL model needed).

``DenoiseTask``: one optimiser, dropout (so RNG state matters), grad accumulation, EMA.
``TinyGANTask``: G and D optimisers, two phases (pixel warm-up, then adversarial with fresh
optimisers), the discriminator called raw inside the generator loss.
Both are reused by test_checkpoint.py, test_hub.py and test_ddp.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from blindinpaint.cli import main
from blindinpaint.config import load_config, to_dict
from blindinpaint.errors import ConfigError, UserError
from blindinpaint.train import TASKS, ExperimentConfig, ExportSpec, Task, load_experiment, train
from blindinpaint.train.checkpoint import latest_checkpoint, load_checkpoint, seed_all
from blindinpaint.train.logging import make_grid
from blindinpaint.train.distributed import DistInfo
from blindinpaint.train.trainer import StepBatchSampler, Trainer

SRC = Path(__file__).resolve().parents[1] / "src"


# ----------------------------------------------------------------- dummy data
class TinyImages(Dataset):
    """``n`` smooth 3 x size x size images; each epoch draws new holes and noise (seeded)."""

    def __init__(self, n: int, size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.clean = nn.functional.interpolate(torch.rand(n, 3, 2, 2, generator=g), size=size, mode="bilinear")
        self.seed, self.epoch, self.size = seed, 0, size

    def __len__(self) -> int:
        return len(self.clean)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + int(i))
        s = self.size
        y, x = torch.randint(0, s // 2, (2,), generator=g).tolist()
        hole = torch.zeros(1, s, s)
        hole[:, y:y + s // 2, x:x + s // 2] = 1.0
        noise = torch.rand(3, s, s, generator=g)
        clean = self.clean[i]
        return {"corrupted": clean * (1 - hole) + noise * hole, "clean": clean, "hole": hole,
                "index": torch.tensor(int(i)), "pattern": "noise"}


@dataclass
class TinyModelConfig:
    width: int = 8
    dropout: float = 0.1
    nan_at: int = -1          # test hook: make the loss NaN at this step


class TinyNet(nn.Module):
    def __init__(self, cfg: TinyModelConfig):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, cfg.width, 3, padding=1), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Conv2d(cfg.width, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class DenoiseTask(Task):
    ModelConfig = TinyModelConfig
    OPTIMIZERS = ("G",)
    LOSS_WEIGHTS = {"l1": 1.0}
    VAL_METRIC = "l1"

    def build(self):
        self.net = TinyNet(self.model_cfg).to(self.device)
        self.seen: list[int] = []

    def build_dataset(self, split, seed, length=None):
        return TinyImages(length or 16, 8, seed)

    def modules(self):
        return {"net": self.net}

    def optimizers(self, phase):
        return {"G": self.adam("G", self.net.parameters())}

    def train_step(self, batch, step):
        self.seen.extend(batch["index"].tolist())

        def loss_fn(b):
            out = self.module("net")(b["corrupted"])
            l1 = (out - b["clean"]).abs().mean() * self.weight("l1")
            if step == self.model_cfg.nan_at:
                l1 = l1 * float("nan")
            return l1, {"l1": l1.item()}

        return self.optimize("G", loss_fn, batch)

    def val_step(self, batch):
        out = self.module("net")(batch["corrupted"]).clamp(0, 1)
        mse = ((out - batch["clean"]) ** 2).mean()
        return {"l1": (out - batch["clean"]).abs().mean().item(), "psnr": (-10 * torch.log10(mse)).item()}

    def image_grid(self, batch):
        out = self.module("net")(batch["corrupted"]).clamp(0, 1)
        return make_grid([[batch["corrupted"][i], batch["hole"][i], out[i], batch["clean"][i]] for i in range(2)])

    def export_spec(self):
        return ExportSpec(model="tiny_net", config=to_dict(self.model_cfg), modules={"": "net"})


class Critic(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x).mean(dim=(1, 2, 3))


class TinyGANTask(Task):
    """Phase 'warm': G on pixel L1 only. Phase 'adv': + WGAN critic D (fresh optimisers)."""

    ModelConfig = TinyModelConfig
    OPTIMIZERS = ("G", "D")
    LOSS_WEIGHTS = {"pixel": 1.0, "adv": 0.0}
    FLAGS = {"train_d": False}

    def build(self):
        self.gen = TinyNet(self.model_cfg).to(self.device)
        self.critic = Critic(self.model_cfg.width).to(self.device)

    def build_dataset(self, split, seed, length=None):
        return TinyImages(length or 12, 8, seed)

    def modules(self):
        return {"gen": self.gen, "critic": self.critic}

    def on_phase(self, phase):
        super().on_phase(phase)
        self.critic.requires_grad_(bool(self.flag("train_d")))

    def optimizers(self, phase):
        opts = {"G": self.adam("G", self.gen.parameters())}
        if self.flag("train_d"):
            opts["D"] = self.adam("D", self.critic.parameters())
        return opts

    def train_step(self, batch, step):
        logs = {}
        if self.flag("train_d"):
            def d_loss(b):
                with torch.no_grad():
                    fake = self.raw("gen")(b["corrupted"])
                loss = self.module("critic")(fake).mean() - self.module("critic")(b["clean"]).mean()
                return loss, {"d": loss.item()}
            logs.update(self.optimize("D", d_loss, batch))

        def g_loss(b):
            out = self.module("gen")(b["corrupted"])
            pixel = (out - b["clean"]).abs().mean()
            adv = -self.raw("critic")(out).mean() if self.weight("adv") > 0 else out.new_zeros(())
            loss = self.weight("pixel") * pixel + self.weight("adv") * adv
            return loss, {"pixel": pixel.item(), "adv": adv.item()}

        logs.update(self.optimize("G", g_loss, batch))
        return logs

    def val_step(self, batch):
        return {"loss": (self.module("gen")(batch["corrupted"]) - batch["clean"]).abs().mean().item()}

    def image_grid(self, batch):
        return make_grid([[batch["corrupted"][0], self.module("gen")(batch["corrupted"])[0].clamp(0, 1)]])

    def export_spec(self):
        return ExportSpec(model="tiny_net", config=to_dict(self.model_cfg), modules={"": "gen"})


TASKS["dummy_denoise"] = DenoiseTask
TASKS["dummy_gan"] = TinyGANTask

GAN_PHASES = [{"name": "warm", "start": 0, "lrs": {"G": 0.01}},
              {"name": "adv", "start": 3, "loss_weights": {"adv": 0.1}, "lrs": {"G": 0.001, "D": 0.001},
               "flags": {"train_d": True}}]


def make_cfg(out: Path, task: str = "dummy_denoise", overrides: list[str] | None = None, **train) -> ExperimentConfig:
    base = {"task": task, "train": {"steps": 6, "batch_size": 2, "lr": 0.01, "out": str(out), "log_every": 1,
                                    "val_every": 0, "val_size": 4, "grid_every": 0, "ckpt_every": 0,
                                    "keep_last": 2, "threads": 1, "device": "cpu", **train}}
    if task == "dummy_gan":
        base["phases"] = GAN_PHASES
    cfg = load_config(ExperimentConfig, None, overrides, base=base)
    TASKS[task].check_config(cfg)
    return cfg


def final_state(run: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run))


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), f"{name}.{key} differs"
    for name in a["optimizers"]:
        for pid, st in a["optimizers"][name]["state"].items():
            for key, value in st.items():
                assert torch.equal(value, b["optimizers"][name]["state"][pid][key]), f"optimizer {name} {key}"
    for name in a["ema"]:
        for key, value in a["ema"][name].items():
            assert torch.equal(value, b["ema"][name][key]), f"ema {name}.{key}"


# ----------------------------------------------------------------------- tests
def test_sampler_is_a_pure_function_of_step_and_covers_each_epoch():
    full = StepBatchSampler(10, 4, seed=3, start=0, end=5)
    late = StepBatchSampler(10, 4, seed=3, start=3, end=5)
    batches = list(full)
    assert list(late) == batches[3:]
    stream = [pair for b in batches for pair in b]
    epoch0 = sorted(i for e, i in stream if e == 0)
    assert epoch0 == list(range(10))                       # each epoch is a permutation
    ranks = [StepBatchSampler(10, 2, seed=3, start=0, end=5, rank=r, world_size=2) for r in (0, 1)]
    merged = [a + b for a, b in zip(*ranks)]
    assert merged == batches                                # 2 ranks x 2 == 1 rank x 4


def test_a_few_steps_reduce_the_loss(tmp_path):
    cfg = make_cfg(tmp_path / "run", steps=30, ema=0.5, val_every=30, grid_every=30,
                   overrides=["model.dropout=0.0"])
    assert train(cfg) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()]
    l1 = [x["train/l1"] for x in lines if "train/l1" in x]
    assert len(l1) == 30 and sum(l1[-5:]) < 0.7 * sum(l1[:5])
    assert any("val/psnr" in x for x in lines) and all("perf/images_per_s" in x for x in lines if "train/l1" in x)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "train.log").is_file()
    assert (run / "grids" / "step_00000030.png").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "validation" in (run / "train.log").read_text()


@pytest.mark.parametrize("task", ["dummy_denoise", "dummy_gan"])
def test_exact_resume(tmp_path, task):
    """2N steps straight == N steps + resume + N steps (bitwise), also across a phase switch."""
    opts = dict(ema=0.9, grad_accum=2, val_every=2, val_size=2)
    assert train(make_cfg(tmp_path / "straight", task, steps=6, **opts)) == 0
    # dummy_gan switches phase at step 3: resume exactly at the switch, then inside phase 'adv'
    stops = [3, 4, 6] if task == "dummy_gan" else [3, 6]
    assert train(make_cfg(tmp_path / "resumed", task, steps=stops[0], **opts)) == 0
    for steps in stops[1:]:
        assert train(make_cfg(tmp_path / "resumed", task, steps=steps, resume="latest", **opts)) == 0
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert_same_state(straight, resumed)
    if task == "dummy_gan":
        assert resumed["phase"] == "adv" and set(resumed["optimizers"]) == {"G", "D"}
    assert "resumed from" in (tmp_path / "resumed" / "train.log").read_text()


def test_gan_task_phase_two_freezes_and_fresh_optimisers(tmp_path):
    cfg = make_cfg(tmp_path / "gan", "dummy_gan", steps=3)
    train(cfg)
    ck = final_state(tmp_path / "gan")
    assert set(ck["optimizers"]) == {"G"} and ck["phase"] == "warm"
    critic0 = {k: v.clone() for k, v in ck["modules"]["critic"].items()}
    train(make_cfg(tmp_path / "gan", "dummy_gan", steps=5, resume="latest"))
    ck = final_state(tmp_path / "gan")
    assert ck["phase"] == "adv" and set(ck["optimizers"]) == {"G", "D"}
    # fresh Adam for G in phase 2: two steps taken, not five
    assert all(int(s["step"]) == 2 for s in ck["optimizers"]["G"]["state"].values())
    assert any(not torch.equal(critic0[k], v) for k, v in ck["modules"]["critic"].items())


RESTART = {"name": "restart", "start": 4, "reinit": ["critic"], "lrs": {"G": 0.001}, "flags": {"train_d": False}}


def test_phase_reinit_restores_the_seeded_initialisation_and_resumes_exactly(tmp_path):
    """A phase's ``reinit`` modules are set back to the Task's own init (seed + phase start)."""
    over = [f"phases={json.dumps([*GAN_PHASES, RESTART])}"]
    cfg = make_cfg(tmp_path / "straight", "dummy_gan", steps=6, overrides=over)
    assert train(cfg) == 0
    ck = final_state(tmp_path / "straight")
    seed_all(cfg.train.seed + 4)
    expected = TinyGANTask(cfg).critic.state_dict()
    # the critic trained in phase 'adv' and is frozen in 'restart': it must equal a fresh build
    assert all(torch.equal(ck["modules"]["critic"][k], v) for k, v in expected.items())
    assert "re-initialised critic" in (tmp_path / "straight" / "train.log").read_text()
    # resuming before the switch re-initialises exactly as the uninterrupted run did
    assert train(make_cfg(tmp_path / "resumed", "dummy_gan", steps=3, overrides=over)) == 0
    assert train(make_cfg(tmp_path / "resumed", "dummy_gan", steps=6, resume="latest", overrides=over)) == 0
    assert_same_state(ck, final_state(tmp_path / "resumed"))


def test_reinit_of_a_submodule_touches_only_its_weights_and_their_average(tmp_path):
    phases = [*GAN_PHASES, {**RESTART, "reinit": ["gen.body.3"]}]
    cfg = make_cfg(tmp_path / "run", "dummy_gan", ema=0.9, overrides=[f"phases={json.dumps(phases)}"])
    trainer = Trainer(cfg, DistInfo())
    gen = trainer.task.gen
    with torch.no_grad():
        for p in gen.parameters():
            p.fill_(3.0)
    for value in trainer.ema.shadow["gen"].values():
        value.fill_(7.0)
    trainer._reinit(cfg.phases[2])
    trainer.log.close()
    seed_all(cfg.train.seed + 4)
    fresh = TinyGANTask(cfg).gen.state_dict()
    for key, value in gen.state_dict().items():
        if key.startswith("body.3."):
            assert torch.equal(value, fresh[key]) and torch.equal(trainer.ema.shadow["gen"][key], fresh[key])
        else:
            assert (value == 3.0).all() and (trainer.ema.shadow["gen"][key] == 7.0).all(), key


@pytest.mark.parametrize("phases, expected", [
    ([*GAN_PHASES, {**RESTART, "reinit": ["critc"]}], "reinit: 'critc' names no module (the task has critic, gen)"),
    ([*GAN_PHASES, {**RESTART, "reinit": ["gen.body.9"]}], "reinit: 'gen.body.9' names no module"),
    ([{**GAN_PHASES[0], "reinit": ["critic"]}], "phases[0].reinit"),
])
def test_bad_reinit_paths_fail_before_training(tmp_path, phases, expected):
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path / "run", "dummy_gan", overrides=[f"phases={json.dumps(phases)}"]))
    assert expected in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_loss_stops_with_one_line_naming_step_and_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dummy_denoise\nmodel: {nan_at: 3}\n"
                   "train: {steps: 8, batch_size: 2, ckpt_every: 2, val_every: 0, grid_every: 0, device: cpu}\n")
    status = main(["train", "--config", str(cfg), f"train.out={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "step 3" in err and "'l1'" in err and "nan" in err and "step_00000002.pt" in err
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000002.pt"]
    assert torch.isfinite(load_checkpoint(tmp_path / "run" / "checkpoints" / ckpts[0])["modules"]["net"]
                          ["body.0.weight"]).all()


@pytest.mark.parametrize("override, expected", [
    ("train.stepz=3", "unknown config key 'train.stepz'"),
    ("model.widht=3", "unknown config key 'model.widht'"),
    ("phases=[{name: a, loss_weights: {l2: 1}}]", "phases[0].loss_weights.l2"),
    ("task=nope", "unknown task 'nope'"),
])
def test_config_errors_are_one_line(tmp_path, capsys, override, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dummy_denoise\n")
    assert main(["train", "--config", str(cfg), override]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_resume_with_another_architecture_is_a_clear_error(tmp_path):
    train(make_cfg(tmp_path / "run", steps=2))
    with pytest.raises(UserError, match=r"do not fit this model: 'net.body.0.weight' has shape \(8, 3, 3, 3\) "
                                        r"there but \(4, 3, 3, 3\) here"):
        train(make_cfg(tmp_path / "run", steps=4, resume="latest", overrides=["model.width=4"]))
    with pytest.raises(UserError, match="trained with task 'dummy_denoise'"):
        train(make_cfg(tmp_path / "run", "dummy_gan", steps=4, resume="latest"))
    with pytest.raises(UserError, match="no such run directory or checkpoint"):
        train(make_cfg(tmp_path / "run", steps=4, resume=str(tmp_path / "missing")))


class FolderTask(DenoiseTask):
    """Same as DenoiseTask but with the project's real photo dataset (default build_dataset)."""

    build_dataset = Task.build_dataset


TASKS["dummy_folder"] = FolderTask


def test_missing_or_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dummy_folder\ntrain: {device: cpu}\n")
    for root, expected in ((tmp_path / "nope", "image folder not found"), (tmp_path / "empty", "no images found")):
        assert main(["train", "--config", str(cfg), f"data.root={root}", f"train.out={tmp_path / 'r'}"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1


def test_override_keys_scripts_rely_on(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dummy_denoise\n")
    exp = load_experiment(cfg, ["data.root=/photos", "train.steps=7", f"train.out={tmp_path}", "train.resume=latest"])
    assert (exp.data.root, exp.train.steps, exp.train.out, exp.train.resume) == ("/photos", 7, str(tmp_path), "latest")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(SRC)!r}]
        import test_trainer as t
        orig = t.DenoiseTask.train_step
        def slow(self, batch, step):
            time.sleep(0.05)
            return orig(self, batch, step)
        t.DenoiseTask.train_step = slow
        from blindinpaint.train import train
        sys.exit(train(t.make_cfg(t.Path({str(tmp_path / 'run')!r}), steps=100000)))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "scalars.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    ck = final_state(tmp_path / "run")
    assert 3 <= ck["step"] < 100000
    assert "resume=latest" in (tmp_path / "run" / "train.log").read_text()
    assert "Traceback" not in err


def test_dataloader_workers_do_not_change_the_run(tmp_path):
    """Items depend on (seed, epoch, index) only, so worker processes give the same batches."""
    for workers in (0, 2):
        train(make_cfg(tmp_path / f"w{workers}", steps=10, overrides=[f"data.num_workers={workers}"]))
    assert_same_state(final_state(tmp_path / "w0"), final_state(tmp_path / "w2"))


def test_engine_accumulates_like_one_batch_and_steps_several_optimisers():
    from blindinpaint.train.engine import StepEngine

    x = torch.arange(8.0)
    a, b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    engine = StepEngine(torch.device("cpu"), grad_accum=4)
    engine.optimizers = {"A": torch.optim.SGD([a], lr=0.1), "B": torch.optim.SGD([b], lr=0.2)}
    sizes = []

    def loss_fn(micro):
        sizes.append(len(micro["x"]))
        loss = (a * micro["x"]).mean() + b * micro["x"].mean() ** 2
        return loss, {"loss": loss.item()}

    engine.optimize(("A", "B"), loss_fn, {"x": x})
    assert sizes == [2, 2, 2, 2]
    # d/da mean(a x) = mean(x) = 3.5 (whole batch); d/db = mean over micro-batches of mean(x_i)^2
    assert torch.isclose(a, torch.tensor(-0.1 * 3.5))
    assert torch.isclose(b, torch.tensor(-0.2 * (0.5 ** 2 + 2.5 ** 2 + 4.5 ** 2 + 6.5 ** 2) / 4))
    assert a.grad is None and b.grad is None

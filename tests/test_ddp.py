"""DDP through torchrun: 2 CPU processes (gloo) run the same trainer.

Checks: both ranks end with identical parameters; the two ranks see disjoint halves of each
global batch; 2 ranks x batch 2 follow the same trajectory as 1 process x batch 4 (DDP averages
gradients); the GAN task (two optimisers, phase switch, raw critic inside the G loss) runs too;
only rank 0 writes into the run directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from blindinpaint.train import train
from blindinpaint.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import SRC, make_cfg  # noqa: E402  (registers the dummy tasks)

SCRIPT = """
import builtins, json, os, sys
from pathlib import Path
sys.path[:0] = [{tests!r}, {src!r}]
import torch
import test_trainer as t
from blindinpaint.train.distributed import cleanup_distributed, init_distributed
from blindinpaint.train.trainer import Trainer

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
writes = []
if rank != 0:   # record every attempt of rank 1 to create or write a file under out/runs/
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    def inside(path):
        return str(Path(path).resolve()).startswith(str((out / "runs").resolve()))
    def spy_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and inside(file):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)
    def spy_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            writes.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)
    def spy_mkdir(path, *args, **kwargs):
        if inside(path):
            writes.append(str(path))
        return real_mkdir(path, *args, **kwargs)
    builtins.open, os.open, os.mkdir = spy_open, spy_os_open, spy_mkdir

seen = []
orig = t.DenoiseTask.train_step
def recording(self, batch, step):
    seen.append(batch["index"].tolist())
    return orig(self, batch, step)
t.DenoiseTask.train_step = recording

info = init_distributed("cpu")
report = {{"world": info.world_size, "seen": seen}}
for task in ("dummy_denoise", "dummy_gan"):
    cfg = t.make_cfg(out / "runs" / task, task, steps=5, overrides=["model.dropout=0.0"],
                     val_every=2, grid_every=2, ckpt_every=2)
    trainer = Trainer(cfg, info)
    report[task + "_status"] = trainer.run()
    report[task] = {{f"{{n}}.{{k}}": v.tolist() for n, m in trainer.task.modules().items()
                    for k, v in m.state_dict().items()}}
cleanup_distributed()
report["writes"] = writes
with open(out / f"report_rank{{rank}}.json", "w") as f:
    json.dump(report, f)
"""


def test_two_process_gloo_run(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent), src=str(SRC))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["dummy_denoise_status"] == r1["dummy_gan_status"] == 0

    for task in ("dummy_denoise", "dummy_gan"):
        assert r0[task].keys() == r1[task].keys()
        for key in r0[task]:
            assert r0[task][key] == r1[task][key], f"{task}: {key} differs between ranks"

    assert len(r0["seen"]) == len(r1["seen"]) == 5
    for a, b in zip(r0["seen"], r1["seen"]):
        assert not set(a) & set(b)                      # each rank its own half of the global batch

    assert r1["writes"] == [], f"rank 1 wrote {r1['writes'][:3]}"
    runs = tmp_path / "runs"
    assert len(list((runs / "dummy_denoise" / "tb").glob("events.*"))) == 1
    assert (runs / "dummy_gan" / "checkpoints" / "step_00000005.pt").is_file()
    ckpt = load_checkpoint(latest_checkpoint(runs / "dummy_gan"))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["phase"] == "adv"
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])   # per-rank seeds

    # DDP averages gradients: 2 ranks x batch 2 == 1 process x batch 4 on the same global batches
    single = tmp_path / "single"
    train(make_cfg(single, "dummy_denoise", steps=5, batch_size=4, overrides=["model.dropout=0.0"]))
    weights = load_checkpoint(latest_checkpoint(single))["modules"]["net"]
    for key, value in weights.items():
        assert torch.allclose(torch.tensor(r0["dummy_denoise"][f"net.{key}"]), value, atol=1e-6), key

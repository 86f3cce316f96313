"""How strongly does each loss term pull on the HCL refiner? Per-term gradient norms at ``refined``.

    python benchmarks/refiner_gradient_balance.py --checkpoint runs/default/checkpoints/step_00005250.pt \
        [--phase phase2] [--fresh-refiner] [--count 4] [--threads 2]

Builds the HCL Task of the checkpoint's config, loads its restoration network and critic, enters
``--phase`` (default: the checkpoint's phase) and runs one training forward pass on ``--count``
seeded validation samples.  For each weighted refined-image term of the generator loss
(``pixel`` x L1, ``perc`` x perceptual, ``adv`` x WGAN generator loss) it prints the mean
per-sample L2 norm of its gradient with respect to the ``refined`` image.  A term whose norm is
orders of magnitude above the others decides what the refiner learns (docs/training.md, "phase 2").
``--fresh-refiner`` replaces the checkpoint's refiner by a freshly initialised one (seed 0).
"""

from __future__ import annotations

import argparse
import sys

from script_errors import run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt) of an HCL run")
    parser.add_argument("--phase", help="phase name whose loss weights apply (default: the checkpoint's)")
    parser.add_argument("--fresh-refiner", action="store_true")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    return run_reporting_errors(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    import torch

    from blindinpaint.config import load_config
    from blindinpaint.errors import UserError
    from blindinpaint.models.hcl import GatedUNetRefiner
    from blindinpaint.train.checkpoint import load_checkpoint, load_module_state
    from blindinpaint.train.config import ExperimentConfig
    from blindinpaint.train.hcl_task import HCLTask, to_model_range

    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt["task"] != "hcl":
        raise UserError(f"{args.checkpoint} is a '{ckpt['task']}' checkpoint; this script needs an HCL run")
    cfg = load_config(ExperimentConfig, None, None, base=ckpt["config"])
    phases = {p.name: p for p in cfg.phases}
    name = args.phase or ckpt["phase"]
    if name not in phases:
        raise UserError(f"no phase '{name}' (the config has {', '.join(phases)})")
    task = HCLTask(cfg, "cpu")
    for key, module in task.modules().items():
        load_module_state(module, ckpt["modules"][key], key, args.checkpoint)
    if args.fresh_refiner:
        torch.manual_seed(0)
        m = task.model_cfg  # the refiner alone, seeded (the numbers in docs/training.md)
        task.net.refiner.load_state_dict(GatedUNetRefiner(m.refiner_width, m.refiner_levels, m.refiner_max_channels,
                                                          m.refiner_mid_blocks).state_dict())
    task.on_phase(phases[name])
    if not task.trains_refiner():
        raise UserError(f"phase '{name}' does not train the refiner")
    dataset = task.build_dataset("val", seed=0, length=args.count)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    out = task.forward(batch)
    _, terms = task.refiner_terms(out, to_model_range(batch["clean"]))
    weights = {"pixel_refined": task.weight("pixel"), "perc_refined": task.weight("perc"),
               "adv_g": task.weight("adv")}
    print(f"checkpoint step {ckpt['step']}, phase '{name}', {args.count} samples, "
          f"{'fresh' if args.fresh_refiner else 'trained'} refiner")
    print(f"{'term':<16}{'weight':>10}{'value':>12}{'grad norm / sample':>22}")
    for key, weight in weights.items():
        if key not in terms:
            continue
        grad, = torch.autograd.grad(weight * terms[key], out.refined, retain_graph=True)
        norm = grad.flatten(1).norm(dim=1).mean().item()
        print(f"{key:<16}{weight:>10.3g}{float(terms[key].detach()):>12.4g}{norm:>22.4g}")
    return 0

if __name__ == "__main__":
    sys.exit(main())

"""Where does the hierarchical contrastive loss stand? Per-stage diagnostics of an HCL model.

    python benchmarks/contrast_diagnostics.py --model checkpoints/default/latest.pt \
        --config configs/default.yaml [--split val] [--count 32] [--seed 0] [--threads 2]

On ``--count`` seeded validation samples made with the ``data:`` section of ``--config`` (its
patterns, buckets and size), in training mode (S1 polarity from the ground truth, as in training),
it prints for every stage (S1 = coarsest):

* ``loss``: the stage's contrastive loss as trained (Eq. 2; at S2+ with the coarser stage's
  representatives as extra keys);
* ``queries only`` vs ``chance``: the loss over the sampled queries alone, and ``log(1 + P N)``,
  the value it takes when every similarity is equal (embeddings that carry no label information);
  a stage whose loss sits at chance has learnt nothing at the positions it is asked about;
* ``label acc``: accuracy of the stage's cluster labels on positions whose patch of the true mask is
  pure (all hole or all valid);
* ``decided wrong``: share of the positions the stage decided (the pool the next stage draws its
  representatives from) whose cluster label contradicts the true mask: the label noise the next
  stage's loss is trained against.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="run directory, checkpoint, export folder or bundled name")
    parser.add_argument("--config", required=True, help="YAML whose data: section makes the samples")
    parser.add_argument("--split", default="val")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from blindinpaint import hub
    from blindinpaint.config import from_dict, read_yaml
    from blindinpaint.data.dataset import DataConfig, build_dataset
    from blindinpaint.models.contrast import (_gather_rows, circle_loss, contrastive_loss, pool_ground_truth,
                                              stage_queries)
    from blindinpaint.padding import pad_to_multiple

    torch.set_num_threads(args.threads)
    loaded = hub.load(args.model)
    if loaded.task != "hcl":
        print(f"error: {args.model} is a '{loaded.task}' model; this script diagnoses HCL models", file=sys.stderr)
        return 2
    net = hub.build_model(loaded)
    data = dict(read_yaml(args.config)["data"], split=args.split)
    dataset = build_dataset(from_dict(DataConfig, data), train=False, seed=args.seed, length=args.count)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    cfg = net.cfg.contrast
    with torch.no_grad():
        det = net(batch["corrupted"] * 2.0 - 1.0, gt_hole=batch["hole"], refine=False).detection
        gt = pad_to_multiple(batch["hole"], net.cfg.multiple(), "constant")[0]
        _, trained = contrastive_loss(det, gt, cfg, torch.Generator().manual_seed(args.seed))
    print(f"model {args.model} | {len(dataset)} samples of {args.config} ({args.split} split, seed {args.seed})")
    print("| stage | loss | queries only | chance log(1+PN) | label acc (pure) | decided wrong |")
    print("|---|---|---|---|---|---|")
    for s, emb in enumerate(det.embeddings):
        B, _, H, W = emb.shape
        _, pure_valid, pure_hole = pool_ground_truth(gt, (H, W))
        real = det.valid_px[s]
        label_hole = det.cluster_prob_hole[s] > 0.5
        pure = (pure_valid | pure_hole) & real
        acc = ((label_hole == pure_hole) & pure).sum() / pure.sum().clamp(min=1)
        decided = det.decided[s] & pure
        wrong = ((label_hole != pure_hole) & decided).sum() / decided.sum().clamp(min=1)
        idx, q_mask, q_hole = stage_queries(det, gt, s, cfg, torch.Generator().manual_seed(args.seed))
        q = _gather_rows(emb, idx)
        with torch.no_grad():
            per_image, has = circle_loss(q, q_hole, q_mask, q, q_hole, q_mask, cfg.tau, True)
        pos, neg = (q_mask & q_hole).sum(1).float(), (q_mask & ~q_hole).sum(1).float()
        chance = torch.log1p(pos * neg)[has].mean()
        only = (per_image * has).sum() / has.sum().clamp(min=1)
        last = s == len(det.embeddings) - 1
        print(f"| S{s + 1} | {float(trained[s]):.3f} | {float(only):.3f} | {float(chance):.3f} | {float(acc):.3f} | "
              f"{'-' if last else f'{float(wrong):.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which label-free score tells a clean photo from a corrupted one? AUROC of candidate scores.

    python benchmarks/no_corruption_scores.py --model default --photos data/corpus --split val \
        --assets data/assets [--size 128] [--threads 2]

SPEC section 3 asks for a "nothing is corrupted" decision from the cosine of the two S1 centres
or from the cluster classifier's margin.  With the rule off, on the split's clean crops (5 per
photo) and on its seeded corrupted images (every pattern, as ``blindinpaint calibrate`` makes
them), this prints for each candidate score the mean on clean and on corrupted images and the
AUROC of "clean scores higher than corrupted" (0.5 = no separation, 1 = perfect):

* ``centre_cosine``: cosine of the two S1 centres (the ``centre_cosine`` rule);
* ``clean_head``: P(clean) of the learnt head (``no_corruption: head``), for a model that has one;
* ``classifier_min_valid``: the classifier's P(valid) of the less valid centre (both valid = clean);
* ``classifier_small_margin``: minus the gap between the two centres' classifier logits.
"""

from __future__ import annotations

import argparse
import sys

from script_errors import run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="HCL export, run directory or bundled name")
    parser.add_argument("--photos", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--assets", help="fonts/logos folder (text and logo patterns)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    return run_reporting_errors(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    import torch

    from blindinpaint import hub
    from blindinpaint.calibrate import clean_crops, corrupted_loader, rule_off
    from blindinpaint.data.corruptions import PATTERNS
    from blindinpaint.data.dataset import resolve_photos
    from blindinpaint.errors import UserError
    from blindinpaint.models.contrast import centre_cosine

    torch.set_num_threads(args.threads)
    loaded = hub.load(args.model)
    if loaded.task != "hcl":
        raise UserError(f"{args.model} is a '{loaded.task}' model; this script needs an HCL model")
    paths = resolve_photos(args.photos, args.split, lenient_split=True)
    net = hub.build_model(loaded)

    @torch.no_grad()
    def scores(images: torch.Tensor) -> dict[str, torch.Tensor]:
        det, _, _ = net.detect(images * 2 - 1)
        logits = det.classifier_logits  # B x 2, logit that centre k is the valid one
        out = {"centre_cosine": centre_cosine(det.centres[0].float())}
        if det.clean_logit is not None:
            out["clean_head"] = torch.sigmoid(det.clean_logit.float())
        out["classifier_min_valid"] = torch.sigmoid(logits).amin(dim=1)
        out["classifier_small_margin"] = -(logits[:, 0] - logits[:, 1]).abs()
        return out

    patterns = [p for p in PATTERNS if args.assets or p not in ("text", "logo")]
    with rule_off(net):
        clean = [scores(b) for b in clean_crops(paths, args.size, 5).split(16)]
        corrupted = [scores(batch["corrupted"]) for batch in
                     corrupted_loader(args.photos, args.split, patterns, args.size, args.assets, 16, 0)]
    print(f"model {args.model} | {args.split} split, {args.size} px | patterns {', '.join(patterns)}")
    print("| score | clean mean | corrupted mean | AUROC (clean > corrupted) | n clean / corrupted |")
    print("|---|---:|---:|---:|---:|")
    for key in clean[0]:
        c = torch.cat([d[key] for d in clean])
        r = torch.cat([d[key] for d in corrupted])
        greater = (c[:, None] > r[None, :]).double().mean() + 0.5 * (c[:, None] == r[None, :]).double().mean()
        print(f"| {key} | {c.mean():.3f} | {r.mean():.3f} | {greater:.3f} | {c.numel()} / {r.numel()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

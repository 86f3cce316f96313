#!/usr/bin/env bash
# Training runs of the CPU-scale replication (issue 7, docs/results.md), one group at a time:
#
#   bash benchmarks/replicate_runs.sh GROUP [THREADS]
#
# GROUP: main (hcl_tiny, vcnet_cpu, seg_tiny), ablations (HCL without hierarchy / inter-stage
# consistency / sample selection), depth (1, 2, 4 stages; 3 = main), logo, gdn (CE, BCE, Adv),
# or tests (the seeded test sets, made once).  Every compared run has the same steps, batch, seed
# and data order (the config's), so a group's runs are comparable.  The runs of a group go side by
# side with THREADS (default 1) torch threads each, so their wall-clock times are busy-machine
# figures (idle images/s: docs/results.md, "Budgets and speed").  Each run writes
# runs/rep_<name>/ (git-ignored); runs resume with the same command after an interruption.  A run
# of a group other than main whose final export is committed in exports/replication/<name> is
# skipped (a group can be finished over several sessions; replicate_eval.sh then uses the export).
# Evaluation commands: docs/evaluation.md; results and commentary: docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?usage: replicate_runs.sh GROUP [THREADS]}
threads=${2:-1}
photos=data/corpus

run() {  # run NAME CONFIG [OVERRIDE...]: train in the background, resuming when a checkpoint exists
    local name=$1 config=$2
    shift 2
    # (not for `main`: replicate_eval.sh main re-exports from runs/, e.g. for the calibration copy)
    if [ "$group" != main ] && [ -d "exports/replication/$name" ] && [ ! -d "runs/rep_$name/checkpoints" ]; then
        echo "skipping $name: its final weights are committed in exports/replication/$name (remove it to retrain)" >&2
        return
    fi
    local out=runs/rep_$name resume=()
    [ -d "$out/checkpoints" ] && resume=(train.resume=latest)
    blindinpaint train --config "$config" data.root=$photos train.threads="$threads" train.keep_last=1 \
        train.out="$out" "${resume[@]}" "$@" > "runs/rep_$name.log" 2>&1 &
}

case $group in
    tests)  # 128 px test sets of issue 7 (seen / unseen patterns, unseen source), 0-30 / 30-60 %
        common=(--images $photos --split test --assets data/assets --buckets 0-30,30-60 --size 128)
        blindinpaint synth "${common[@]}" --noise-images $photos --noise-split train --patterns image --seed 0 -o runs/bench128/seen
        blindinpaint synth "${common[@]}" --noise-images $photos --noise-split noise_test --patterns image --seed 1 -o runs/bench128/unseen_source
        blindinpaint synth "${common[@]}" --patterns constant,single_color,noise,text --seed 2 -o runs/bench128/unseen_patterns
        blindinpaint synth "${common[@]}" --patterns logo --seed 4 -o runs/bench128/logo
        # the same three sets at 256 px (models trained at 128 px; seeds + 10)
        big=(--images $photos --split test --assets data/assets --buckets 0-30,30-60 --size 256)
        blindinpaint synth "${big[@]}" --noise-images $photos --noise-split train --patterns image --seed 10 -o runs/bench256/seen
        blindinpaint synth "${big[@]}" --noise-images $photos --noise-split noise_test --patterns image --seed 11 -o runs/bench256/unseen_source
        blindinpaint synth "${big[@]}" --patterns constant,single_color,noise,text --seed 12 -o runs/bench256/unseen_patterns
        # GDN's six buckets, constant fill (docs/gdn.md)
        blindinpaint synth --images $photos --split test --patterns constant --size 128 --seed 20 --blur-sigma 0 \
            --buckets 1-10,10-20,20-30,30-40,40-50,50-60 -o runs/bench128/gdn_test
        blindinpaint synth "${common[@]}" --noise-images $photos --noise-split train --patterns image --bidirectional \
            --seed 5 -o runs/bench128/bidirectional
        # the corpus's test photos as a plain folder (evaluate --clean: false-positive rate)
        python -c "import json, os, sys; root = os.path.abspath(sys.argv[1]); os.makedirs('runs/clean_test', exist_ok=True)
for p in json.load(open(os.path.join(root, 'manifest.json')))['photos']:
    link = os.path.join('runs/clean_test', os.path.basename(p['file']))
    if p['split'] == 'test' and not os.path.lexists(link): os.symlink(os.path.join(root, p['file']), link)" $photos
        ;;
    main)  # all three at once (~2 h on 2 cores): one after another would not fit a session
        run hcl_tiny configs/hcl_tiny.yaml
        run vcnet_cpu configs/vcnet_cpu.yaml
        run seg_tiny configs/seg_tiny.yaml
        ;;
    ablations)
        run no_hierarchy configs/hcl_tiny.yaml model.contrast.hierarchical=false
        run no_inter_stage configs/hcl_tiny.yaml model.contrast.inter_stage=false
        run no_selection configs/hcl_tiny.yaml model.contrast.sample_selection=false
        ;;
    depth)
        run depth1 configs/hcl_tiny.yaml model.contrast.stages=1
        run depth2 configs/hcl_tiny.yaml model.contrast.stages=2
        # 4 stages need a 4th encoder stage (one more downsampling): capacity differs from main
        run depth4 configs/hcl_tiny.yaml model.contrast.stages=4 'model.encoder_depths=[4,2,2,2]' \
            'model.encoder_heads=[1,2,4,8]' 'model.decoder_depths=[1,2,2,2]'
        ;;
    logo)
        run logo configs/hcl_tiny.yaml 'data.patterns=[logo]' data.assets=data/assets
        ;;
    gdn)
        run gdn_ce configs/gdn_ablation_ce.yaml
        run gdn_bce configs/gdn_ablation_bce.yaml
        run gdn_adv configs/gdn_ablation_adv.yaml
        ;;
    *)
        echo "unknown group '$group' (tests, main, ablations, depth, logo, gdn)" >&2
        exit 2
        ;;
esac
wait

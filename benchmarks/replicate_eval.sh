#!/usr/bin/env bash
# Evaluation of the CPU-scale replication (issue 7, docs/results.md), after
# `bash benchmarks/replicate_runs.sh tests` and the training group of the same name:
#
#   bash benchmarks/replicate_eval.sh GROUP [THREADS]
#
# GROUP: main (experiments 1, 2, 5, 6: detection, restoration, GDN fed HCL's / the true mask,
# bidirectional targets, clean photos before / after calibration); ablations, depth, logo, gdn
# (experiments 3, 4, 7: the group's trained runs beside hcl_tiny / the bundled gdn; a run missing
# from runs/ is taken from exports/replication/<name> when committed there, else skipped with a
# message; gdn also scores each detector's `inspect` AUROC); speed-main (idle-machine
# images/s of the main group's models with THREADS threads: 30 phase-1 steps from scratch and 30
# phase-2 steps resumed from the final checkpoint; run it on an otherwise idle machine).  Exports go to
# runs/rep_exports/<name>, results to runs/rep_eval/<experiment>/ (tables.md, results.json, grids).
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?usage: replicate_eval.sh GROUP [THREADS]}
threads=${2:-2}
photos=data/corpus
benches=(--bench runs/bench128/seen --bench runs/bench128/unseen_source --bench runs/bench128/unseen_patterns)

export_run() {  # export_run NAME: the run's final checkpoint -> runs/rep_exports/NAME
    blindinpaint export "runs/rep_$1" --checkpoint latest -o "runs/rep_exports/$1"
}

evaluate() {  # evaluate OUT ARGS...: one `blindinpaint evaluate` into runs/rep_eval/OUT
    local out=$1
    shift
    blindinpaint evaluate --threads "$threads" "$@" -o "runs/rep_eval/$out"
}

case $group in
    main)
        for name in hcl_tiny vcnet_cpu seg_tiny; do export_run $name; done
        models=(--model runs/rep_exports/hcl_tiny --model runs/rep_exports/vcnet_cpu --model runs/rep_exports/seg_tiny)
        # 1, 2 and 6 (before calibration): own detection, restoration, clean test photos
        evaluate main "${models[@]}" "${benches[@]}" --clean runs/clean_test --clean-size 128
        # 2: every restorer (and GDN) fed the true mask, and GDN fed each detector's mask (main Table 2)
        evaluate true_mask "${models[@]}" --model gdn --given-mask true "${benches[@]}"
        for name in hcl_tiny vcnet_cpu seg_tiny; do
            evaluate "gdn_${name}_mask" --model gdn --given-mask "runs/rep_exports/$name" "${benches[@]}"
        done
        # 1 and 2 at 256 px (trained at 128 px)
        evaluate main256 "${models[@]}" --bench runs/bench256/seen --bench runs/bench256/unseen_source \
            --bench runs/bench256/unseen_patterns
        # 5: bidirectional targets (the pasted photo restored with the inverted mask)
        evaluate bidirectional "${models[@]}" --bench runs/bench128/bidirectional
        # 6: the no-corruption threshold of hcl_tiny calibrated on the validation photos, then re-measured
        rm -rf runs/rep_exports/hcl_tiny_calibrated
        cp -r runs/rep_exports/hcl_tiny runs/rep_exports/hcl_tiny_calibrated
        mkdir -p runs/rep_eval
        blindinpaint calibrate runs/rep_exports/hcl_tiny_calibrated --photos $photos --split val --size 128 \
            --patterns image,constant,single_color,noise,text --assets data/assets --threads "$threads" --write \
            | tee runs/rep_eval/calibration_hcl_tiny.txt
        evaluate calibrated --model runs/rep_exports/hcl_tiny --model runs/rep_exports/hcl_tiny_calibrated \
            "${benches[@]}" --clean runs/clean_test --clean-size 128
        ;;
    ablations | depth | logo | gdn)  # the group's runs beside the main group's (committed) models
        case $group in
            ablations) names=(no_hierarchy no_inter_stage no_selection) ;;
            depth) names=(depth1 depth2 depth4) ;;
            logo) names=(logo) ;;
            gdn) names=(gdn_ce gdn_bce gdn_adv) ;;
        esac
        paths=()
        for name in "${names[@]}"; do  # a group may be trained run by run, over several sessions
            if [ -d "runs/rep_$name/checkpoints" ]; then
                export_run "$name"
                paths+=("runs/rep_exports/$name")
            elif [ -d "exports/replication/$name" ]; then  # trained in an earlier session, committed
                paths+=("exports/replication/$name")
            else
                echo "skipping $name: not trained yet (bash benchmarks/replicate_runs.sh $group)" >&2
            fi
        done
        if [ ${#paths[@]} -eq 0 ]; then
            echo "no run of group '$group' is trained yet" >&2
            exit 2
        fi
        models=()
        for path in "${paths[@]}"; do models+=(--model "$path"); done
        case $group in
            ablations | depth)
                evaluate "$group" --model exports/replication/hcl_tiny "${models[@]}" "${benches[@]}" ;;
            logo)  # beside hcl_tiny (trained on `image`) and the bundled default (every pattern, logo included)
                evaluate logo --model exports/replication/hcl_tiny "${models[@]}" --model default \
                    --bench runs/bench128/logo ;;
            gdn)  # Det = the bundled gdn (configs/gdn_cpu.yaml); true masks, GDN's six buckets
                evaluate gdn --model gdn "${models[@]}" --given-mask true --bench runs/bench128/gdn_test
                # the detector itself: AUROC of its `inspect` heat map on its own generator's fills
                # (48 seeded 128 px test crops, as docs/results/gdn_inspect_auroc.md for Det)
                for path in gdn "${paths[@]}"; do
                    python benchmarks/bench_inspect_auroc.py --model "$path" --images $photos --split test \
                        --size 128 --count 48 --seed 0 --threads "$threads" \
                        --write "runs/rep_eval/gdn/auroc_$(basename "$path").md"
                done ;;
        esac
        ;;
    speed-main)
        for name in hcl_tiny vcnet_cpu seg_tiny; do
            quiet=(data.root=$photos train.threads="$threads" train.val_every=100000 train.grid_every=100000
                   train.ckpt_every=100000 train.log_every=10)
            rm -rf "/tmp/speed_${name}_p1" "/tmp/speed_${name}_p2"
            blindinpaint train --config "configs/$name.yaml" "${quiet[@]}" train.steps=30 \
                train.out="/tmp/speed_${name}_p1" 2>&1 | grep -o "step 30/.*img/s" | sed "s/^/$name phase 1: /"
            blindinpaint train --config "configs/$name.yaml" "${quiet[@]}" train.steps=1530 \
                train.resume="runs/rep_$name/checkpoints/step_00001500.pt" train.out="/tmp/speed_${name}_p2" \
                2>&1 | grep -o "step 1530/.*img/s" | sed "s/^/$name phase 2: /"
        done
        ;;
    *)
        echo "unknown group '$group' (main, ablations, depth, logo, gdn, speed-main)" >&2
        exit 2
        ;;
esac

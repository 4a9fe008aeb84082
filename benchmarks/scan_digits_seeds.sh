#!/usr/bin/env bash
# Issue 29's digits figures: for seeds 0, 1, 2 the default pretrained run (SimCLR, export, k-means `kmeans-test`),
# the heads on its frozen embeddings fitted on train (`clustering=kmeans`, `clustering=scan`, `clustering=temi`), and SCAN's whole recipe
# (the SCAN stage: EPOCHS of step 2 scored on the validation part of train every VAL_EVERY epochs, then 200 epochs
# of self-labelling). Then `python benchmarks/scan_digits_table.py DIR/digits_s*` prints the validation curve
# (choose scan.epochs there) and the test figures.
#
#   DIR=/tmp/digits_runs EPOCHS=200 VAL_EVERY=10 bash benchmarks/scan_digits_seeds.sh [STEP...]  # pretrain heads scan
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DIR:-/tmp/digits_runs}
steps=("${@:-pretrain heads scan}")
steps=(${steps[*]})
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for S in ${SEEDS:-0 1 2}; do
    RUN=(seed=$S run.root="$dir" run.key=digits_s${S}_scan${EPOCHS:-200} logger=none)
    for step in "${steps[@]}"; do
        case $step in
        pretrain) python train.py "${RUN[@]}" ;;
        heads)
            for m in kmeans scan temi; do
                sslcluster cluster "${RUN[@]}" clustering=$m clustering.fit_split=train clustering.key=$m-fit-train
                sslcluster evaluate "${RUN[@]}" clustering=$m clustering.key=$m-fit-train
            done ;;
        scan) sslcluster scan "${RUN[@]}" scan.epochs="${EPOCHS:-200}" scan.validation_every="${VAL_EVERY:-10}" ;;
        *) echo "unknown step $step (pretrain, heads, scan)" >&2; exit 2 ;;
        esac
    done
done

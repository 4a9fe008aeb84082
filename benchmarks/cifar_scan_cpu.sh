#!/usr/bin/env bash
# SCAN's pipeline on CIFAR-10's JPEG copy on this CPU, within a stated budget (issue 29): a SimCLR ResNet-18 with the
# CIFAR stem (+experiment=cifar10_simclr: lightly's CIFAR-10 benchmark settings) pretrained for BUDGET of wall time
# (trainer.max_time; the cosine schedule fitted to it), exported; then, fitted on train and scored on test, k-means,
# the SCAN heads (clustering=scan), TEMI's heads (clustering=temi) and SCAN's recipe with the backbone (the SCAN
# stage: neighbours, SCAN_EPOCHS of backbone + head, SL_EPOCHS of self-labelling). Figures land in the run's
# metrics.json and clusters/<key>/ (`sslcluster evaluate` prints them).
#
#   bash benchmarks/cifar_scan_cpu.sh [STEP...]     # steps: pretrain heads scan (default: all three)
#   BUDGET=00:00:45:00 SCAN_EPOCHS=1 SL_EPOCHS=1 SCAN_LIMIT=0.25 TEMI_EPOCHS=10 KEY=cifar10_r18 DIR=/tmp/own_folder bash ...
#
# Needs ../shared/data/cifar10-jpeg.tar.gz (extracted into DIR/cifar10 when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DIR:-/tmp/own_folder}
budget=${BUDGET:-00:00:45:00}
key=${KEY:-cifar10_r18}
steps=("${@:-pretrain heads scan}")
steps=(${steps[*]})
if [ ! -d "$dir/cifar10/train" ]; then
    mkdir -p "$dir/cifar10" && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C "$dir/cifar10"
fi
RUN=(+experiment=cifar10_simclr data.source.root="$dir/cifar10" run.root="$dir/runs" run.key="$key")
for step in "${steps[@]}"; do
    case $step in
    pretrain)
        python train.py "${RUN[@]}" trainer.max_epochs=-1 trainer.max_time="$budget" ;;
    heads)
        for m in kmeans scan temi; do
            extra=()
            [ "$m" = temi ] && extra=(clustering.algorithm.epochs="${TEMI_EPOCHS:-100}")
            sslcluster cluster "${RUN[@]}" clustering=$m clustering.fit_split=train clustering.key=$m-fit-train "${extra[@]}"
            sslcluster evaluate "${RUN[@]}" clustering=$m clustering.key=$m-fit-train
        done ;;
    scan)
        # SCAN_LIMIT: the share of each epoch trained (Lightning's limit_train_batches), for a CPU budget
        sslcluster scan "${RUN[@]}" scan.epochs="${SCAN_EPOCHS:-1}" scan.selflabel.epochs="${SL_EPOCHS:-1}" \
            ${SCAN_LIMIT:+"+trainer.limit_train_batches=$SCAN_LIMIT"} ;;
    *) echo "unknown step $step (pretrain, heads, scan)" >&2; exit 2 ;;
    esac
done

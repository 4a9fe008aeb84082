#!/usr/bin/env bash
# One candidate of the own-folder recipe study (benchmarks/RESULTS.md, "Own-folder recipe"): a time budget of
# training on one thread, validation figures only (val_* in metrics.json: the part of train evaluate.validation
# holds aside; the test split is not for choosing). Run two side by side on a 2-core machine.
#
#   bash benchmarks/own_folder_study.sh ROOT NAME BUDGET [overrides...]
#   bash benchmarks/own_folder_study.sh /tmp/own_folder/cifar10 B_bf16_w32 00:00:08:00 trainer.precision=bf16-mixed \
#       trainer.speed.channels_last=true
#   python benchmarks/own_folder_preprocess.py /tmp/own_folder/study/B_bf16_w32   # k-means preprocessing on val rows
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?image folder}; name=${2:?name}; budget=${3:?DD:HH:MM:SS}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python train.py data=image_folder data.source.root="$root" \
  trainer.max_epochs=-1 trainer.max_time="$budget" run.root="${STUDY_DIR:-/tmp/own_folder/study}" run.key="$name" \
  run.overwrite=true data.pipeline=device baselines=[] evaluate.plots.enabled=false report.enabled=false \
  monitor.knn=false monitor.linear=false evaluate.linear_probe=false data.num_workers=0 "${@:4}"

#!/usr/bin/env bash
# The CIFAR-10 GPU figures of benchmarks/RESULTS.md, one part per command (each a few minutes on one GPU).
#
#   bash benchmarks/gpu_session.sh PART --data DIR [--out DIR] [--work DIR]
#
#   PART        check | throughput | simclr | moco | rotation | fidelity | probe
#     check       versions, CUDA tests (no host synchronisations in the training loop)        ~2 min
#     throughput  model / device / trainer / cpu / lightly images per second                   ~4 min
#     simclr      200 epochs, timed, kNN, k-means                                              ~8 min
#     fidelity    40 epochs, lightly's transform on CPU vs the device path                     ~9 min
#     moco        200 epochs                                                                   ~9 min
#     rotation    200 epochs, linear probe                                                     ~6 min
#     probe       linear probe on CIFAR-10 pixels: torch on CUDA, torch on the CPUs, scikit-learn ~6 min
#   --data DIR  CIFAR-10 as image folders: DIR/train/<class>/*.jpg, DIR/test/<class>/*.jpg
#               (or --archive FILE.tar.gz holding that layout, extracted once into the work folder)
#   --out DIR   logs and results (default: gpu-out)
#   --work DIR  decoded caches and run directories, reused by later parts (default: gpu-work)
#
# Needs the project installed (pip install -e .) and a CUDA GPU. A training part is stopped with SIGTERM after
# LIMIT seconds (default 560): last.ckpt is saved, and the same part with RESUME=1 continues it.
# For a smoke test on a CPU: TRAINER=cpu EPOCHS=1 BACKBONE="backbone=tiny_cnn" EXTRA="+trainer.limit_train_batches=2".
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: gpu_session.sh check|throughput|simclr|moco|rotation|fidelity|probe --data DIR|--archive FILE [--out DIR] [--work DIR]"
PART=${1:?$usage}
shift
DATA="" ARCHIVE="" OUT=gpu-out WORK=gpu-work
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --archive) ARCHIVE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "gpu_session.sh: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT" "$WORK"
if [ -z "$DATA" ]; then
  [ -n "$ARCHIVE" ] || { echo "gpu_session.sh: give --data DIR or --archive FILE; $usage" >&2; exit 2; }
  DATA=$WORK/data/cifar10
  if [ ! -f "$DATA/.extracted" ]; then
    mkdir -p "$DATA" && tar xzf "$ARCHIVE" -C "$DATA" && touch "$DATA/.extracted"
  fi
fi
[ -d "$DATA/train" ] && [ -d "$DATA/test" ] || { echo "gpu_session.sh: $DATA has no train/ and test/ folders" >&2; exit 2; }
LIMIT=${LIMIT:-560}                    # seconds before a training part is sent SIGTERM (checkpoint, exit 143)
export PYTHONUNBUFFERED=1
CACHE=$WORK/cache
RUNS=$WORK/runs
BACKBONE=${BACKBONE:-backbone=resnet18 backbone.module.cifar_stem=true}
COMMON="data=cifar10_folder data.source.root=$DATA $BACKBONE trainer=${TRAINER:-gpu}
  trainer.max_epochs=${EPOCHS:-200} data.batch_size=512 data.num_workers=16 data.pipeline=device
  data.device_cache.dir=$CACHE data.scan.validate=header run.root=$RUNS monitor.every_n_epochs=10 ${EXTRA:-}"

train() {  # train KEY OVERRIDES...: one 200-epoch run; resumes it when RESUME=1
  local key=$1; shift
  local extra=()
  if [ "${RESUME:-0}" = 1 ]; then extra=(run.overwrite=false "run.key=$key" resume=last); else extra=("run.key=$key" run.overwrite=true); fi
  local t0=$SECONDS
  set +e
  timeout -s TERM "$LIMIT" python3 train.py $COMMON "$@" "${extra[@]}" 2>&1 | tee "$OUT/$key.log"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "wall time of the whole command (python start to exit): $((SECONDS - t0)) s" | tee -a "$OUT/$key.log"
  cp "$RUNS/$key/metrics.json" "$OUT/$key.metrics.json" 2>/dev/null || true
  cp "$RUNS/$key/config.yaml" "$OUT/$key.config.yaml" 2>/dev/null || true
  echo "exit status $rc" | tee -a "$OUT/$key.log"
}

case "$PART" in
  check)
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
      python3 -c 'import torch, torchvision, pytorch_lightning as pl, lightly, sklearn; print("torch", torch.__version__, "tv", torchvision.__version__, "pl", pl.__version__, "lightly", lightly.__version__, "sklearn", sklearn.__version__, "cuda", torch.cuda.is_available())'
      python3 -m pytest -q -s -p no:cacheprovider -o addopts= tests/ssl/test_cuda.py \
        tests/data/test_gpu_augment.py::test_cuda_views_equal_cpu_views_and_never_synchronise 2>&1 | grep -v "^INFO" | tail -40 || true
    } 2>&1 | tee "$OUT/check.log" ;;
  throughput)
    python3 benchmarks/throughput.py --data "$DATA" --work-dir "$WORK/tp" --backbone resnet18 --cifar-stem \
      --batch-size 512 --precision bf16 --channels-last --compile --workers 16 --steps 100 --warmup 30 \
      --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.log" ;;
  simclr)   train simclr-c10-e200 method=simclr augmentation=simclr evaluate.linear_probe=false ;;
  moco)     train moco-c10-e200 method=moco augmentation=moco evaluate.linear_probe=false ;;
  rotation) train rot-c10-e200 method=rotation augmentation=rotation stages.baseline=false ;;
  fidelity)
    python3 benchmarks/fidelity.py --epochs 40 --run-root "$WORK/fid" --json "$OUT/fidelity.json" -- \
      data=cifar10_folder "data.source.root=$DATA" augmentation=simclr backbone=resnet18 \
      backbone.module.cifar_stem=true trainer=gpu data.batch_size=512 data.num_workers=16 \
      "data.device_cache.dir=$CACHE" data.scan.validate=header 2>&1 | tee "$OUT/fidelity.log" ;;
  probe)
    { python3 benchmarks/probe_speed.py --cifar "$DATA" --cache "$WORK/probe" --no-knn --plain --device cuda
      python3 benchmarks/probe_speed.py --cifar "$DATA" --cache "$WORK/probe" --no-knn --no-sklearn --device cpu
    } 2>&1 | grep -v "^INFO" | tee "$OUT/probe.log" ;;
  *) echo "gpu_session.sh: unknown part $PART; $usage" >&2; exit 2 ;;
esac

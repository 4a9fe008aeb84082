#!/usr/bin/env bash
# Issue 8's GPU figures, one part per device call (each well inside the 10-minute limit of one command).
#
# On the development machine, once (the data and the wheels the GPU image lacks travel in .gpu/, git-ignored):
#     bash benchmarks/gpu_session.sh prepare
# Then on the GPU machine, one call each, with .gpu carried (device tool: carry [".gpu"]):
#     bash benchmarks/gpu_session.sh check        # versions, CUDA tests (no host syncs in the loop)   ~2 min
#     bash benchmarks/gpu_session.sh throughput   # model / device / trainer / cpu / lightly img/s      ~4 min
#     bash benchmarks/gpu_session.sh simclr       # 200 epochs, timed (target < 8 min), kNN, k-means     ~8 min
#     bash benchmarks/gpu_session.sh fidelity     # 40 epochs, lightly's transform on CPU vs device path ~9 min
#     bash benchmarks/gpu_session.sh moco         # 200 epochs                                           ~9 min
#     bash benchmarks/gpu_session.sh rotation     # 200 epochs, linear probe                             ~6 min
# A session has 30 minutes of device time: check + throughput + simclr + fidelity in one, moco + rotation in
# another. Every part writes its log and results under $OUT (the device tool brings them back), else .gpu/out.
# A training part stopped by its time limit is stopped with SIGTERM: last.ckpt is saved and the same part,
# called again while the machine is warm, resumes it (RESUME=1).
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: gpu_session.sh prepare|check|throughput|simclr|moco|rotation|fidelity}
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
WORK=${GPU_WORK:-/tmp/sslc}            # extracted data, decoded caches, runs: kept while the machine stays warm
DATA=$WORK/data/cifar10
LIMIT=${LIMIT:-560}                    # seconds before a training part is sent SIGTERM (checkpoint, exit 143)

if [ "$PART" = prepare ]; then
  mkdir -p .gpu/whl
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
  cp ../shared/data/cifar10-jpeg.tar.gz .gpu/
  # what the GPU image (Python 3.12, torch, torchvision, lightning, sklearn, numba) lacks; antlr4 4.9.3 has no
  # wheel on PyPI: pip builds one (pure Python) into its cache when hydra-core is installed here.
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.3.1 \
    umap-learn==0.5.12 pynndescent==0.7.0 faiss-cpu==1.15.1
  antlr=$(find ~/.cache/pip -name 'antlr4_python3_runtime-4.9.3-py3-none-any.whl' | head -1)
  [ -n "$antlr" ] || python -m pip wheel -q --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3
  [ -n "$antlr" ] && cp "$antlr" .gpu/whl/
  du -sh .gpu
  exit 0
fi

# -- on the GPU machine ---------------------------------------------------------------------------------------
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import lightly, hydra, umap' 2>/dev/null || \
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
if [ ! -f "$DATA/.extracted" ]; then
  mkdir -p "$DATA" && tar xzf .gpu/cifar10-jpeg.tar.gz -C "$DATA" && touch "$DATA/.extracted"
fi
CACHE=$WORK/cache
RUNS=$WORK/runs
# TRAINER / EPOCHS / BACKBONE / EXTRA exist for a smoke test of this script on a CPU, e.g.
#   TRAINER=cpu EPOCHS=1 BACKBONE="backbone=tiny_cnn" EXTRA="+trainer.limit_train_batches=2" bash ... simclr
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
  *) echo "gpu_session.sh: unknown part $PART" >&2; exit 2 ;;
esac

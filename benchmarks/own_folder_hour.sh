#!/usr/bin/env bash
# The own-folder recipe on CIFAR-10's JPEG copy as a new user runs it: all 50,000 train and 10,000 test images,
# one hour of training (trainer.max_time), everything else the image folder's data-aware defaults. Learned features
# against raw pixels and UMAP-on-pixels (kNN, linear probe, NMI, ARI, ACC) land in the run's metrics.json.
#
#   bash benchmarks/own_folder_hour.sh colour [DIR]    # the JPEG copy as it is
#   bash benchmarks/own_folder_hour.sh gray [DIR]      # the same images converted to L mode (grayscale)
#   BUDGET=00:00:15:00 bash benchmarks/own_folder_hour.sh colour   # another budget
#
# DIR (default /tmp/own_folder) receives the extracted tree and the runs. Needs ../shared/data/cifar10-jpeg.tar.gz.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?colour or gray}
dir=${2:-/tmp/own_folder}
budget=${BUDGET:-00:01:00:00}
archive=../shared/data/cifar10-jpeg.tar.gz
mkdir -p "$dir"
if [ ! -d "$dir/cifar10/train" ]; then
    mkdir -p "$dir/cifar10" && tar xzf "$archive" -C "$dir/cifar10"
fi
root="$dir/cifar10"
if [ "$kind" = gray ]; then
    root="$dir/cifar10_gray"
    if [ ! -f "$root/.done" ]; then
        python - "$dir/cifar10" "$root" <<'PY'
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for f in sorted(src.rglob("*.jpg")):
    out = dst / f.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(f).convert("L").save(out, quality=95)
(dst / ".done").write_text("ok\n")
PY
    fi
fi
python train.py data=image_folder data.source.root="$root" trainer.max_epochs=-1 trainer.max_time="$budget" \
    run.root="$dir/runs" run.key="cifar10_${kind}_$(date +%Y%m%d-%H%M%S)" "${@:3}"

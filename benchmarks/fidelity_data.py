"""The data sets of the fidelity comparison (``benchmarks/fidelity.py``), from a CIFAR-10 image folder.

From ``SRC/{train,test}/<class>/`` (e.g. the CIFAR-10 JPEG copy) it writes two folders under ``OUT``:

- ``OUT/cifar/{train,test}/<class>/``: the first ``--train`` images (sorted by name) of each class of ``SRC/train``
  and the first ``--test`` of ``SRC/test`` (all by default), as symbolic links to the originals;
- ``OUT/photo/{train,test}/<class>/``: the same images resized (PIL LANCZOS) to a random width and height each in
  ``[--low, --high]``, never square (seeded by ``--seed``, drawn in the order of the file list), saved as PNG.

    python benchmarks/fidelity_data.py --src /work/data --out /work/fid2 --train 100 --test 0
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def build(src: Path, out: Path, n_train: int, n_test: int, low: int, high: int, seed: int) -> dict[str, int]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in sorted(p.name for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(q for q in (src / split / cls).iterdir() if q.is_file())
            files = files[:n] if n > 0 else files
            for kind in ("cifar", "photo"):
                (out / kind / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                link = out / "cifar" / split / cls / f.name
                if not link.exists():
                    os.symlink(f.resolve(), link)
                w = h = 0
                while w == h:  # not square
                    w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
                target = out / "photo" / split / cls / (f.stem + ".png")
                if not target.exists():
                    with Image.open(f) as im:
                        im.convert("RGB").resize((w, h), Image.LANCZOS).save(target)
            counts[f"{split}/{cls}"] = len(files)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder with train/<class>/ and test/<class>/")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=100, help="images per class from train/ (0: all)")
    p.add_argument("--test", type=int, default=0, help="images per class from test/ (0: all)")
    p.add_argument("--low", type=int, default=48)
    p.add_argument("--high", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    counts = build(Path(a.src), Path(a.out), a.train, a.test, a.low, a.high, a.seed)
    for split in ("train", "test"):
        n = [v for k, v in counts.items() if k.startswith(split + "/")]
        print(f"{split}: {len(n)} classes, {sum(n)} images ({min(n)}-{max(n)} per class)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The main job: pretrain -> export -> cluster -> evaluate -> report.

    python train.py                                   # embedded digits default, a few minutes on a CPU
    python train.py method=simclr trainer.max_epochs=5 data=cifar10_folder data.source.root=/path
    python train.py -m seed=0,1,2                     # Hydra multirun
    python train.py --help                            # config groups, their options, the main overrides
    python train.py method=moco --cfg job             # the resolved config, nothing runs
"""

import sys

from sslcluster.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]], prog="python train.py"))

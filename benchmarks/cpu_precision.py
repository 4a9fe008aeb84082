"""Training-step speed of the CPU backbones at float32 or bf16 autocast, NCHW or channels-last: forward, backward
and an SGD step on random 32 px images, 512 views a step (benchmarks/RESULTS.md, own-folder recipe).

    python benchmarks/cpu_precision.py 2      # torch threads
"""

from __future__ import annotations

import sys
import time

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def bench(threads: int, width: int, depth: int, precision: str, channels_last: bool, size: int = 32,
          batch: int = 512, steps: int = 6, arch: str | None = None) -> None:
    """Print the views per second of one configuration."""
    import torch

    from sslcluster.ssl.backbones import ResNet, TinyCNN

    torch.manual_seed(0)
    backbone = ResNet(arch, cifar_stem=True) if arch else TinyCNN(3, width, depth)
    net = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.out_dim, backbone.out_dim), torch.nn.ReLU(),
                              torch.nn.Linear(backbone.out_dim, 128))
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = net(x)
        loss = z.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / steps
    name = arch or f"tiny w{width} d{depth}"
    print(f"threads={threads} {name} {size}px {precision} channels_last={channels_last}: {batch / dt:.0f} views/s",
          flush=True)


def main() -> None:
    import torch

    threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    for width in (32, 64):
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                bench(threads, width, 3, precision, channels_last)
    bench(threads, 0, 0, "bf16", True, arch="resnet18", batch=64, steps=2)
    bench(threads, 0, 0, "fp32", False, arch="resnet18", batch=64, steps=2)


if __name__ == "__main__":
    main()

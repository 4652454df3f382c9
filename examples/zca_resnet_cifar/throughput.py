"""Training throughput of ResNet-18 with BatchNorm, ZCA (several d) and PCA after the stem.

Times full training steps (batched augmentation, forward, backward, SGD
update) on the synthetic data set, for every configuration in turn, several
rounds interleaved so that a change in the machine's load hits all of them
alike, and prints the median images/s per configuration and its ratio to
BatchNorm as a Markdown table.

Example::

    python examples/zca_resnet_cifar/throughput.py --steps 3 --rounds 3
    python examples/zca_resnet_cifar/throughput.py --device cuda --steps 50 --amp bf16 \
        --channels-last
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

if __package__:  # imported as a package (the tests)
    from . import data as data_lib
    from .model import ModelConfig, ResNet
else:  # run as a script: this folder is on sys.path
    import data as data_lib
    from model import ModelConfig, ResNet


def configurations(width: int) -> list[tuple[str, ModelConfig]]:
    configs = [("bn", ModelConfig(width=width, norm="bn"))]
    for d in (4, 16, 64):
        if width % d == 0:
            configs.append(
                (f"zca d={d}", ModelConfig(width=width, norm="zca", num_groups=width // d))
            )
    k = min(16, width)
    configs.append((f"pca d={width} k={k}", ModelConfig(width=width, norm="pca", n_components=k)))
    return configs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=64, help="64 = ResNet-18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="timed steps per configuration and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each timing")
    p.add_argument("--rounds", type=int, default=5, help="timings per configuration")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.batch_size * max(args.steps, args.warmup)
    images = data_lib.make_synthetic_split(n, 10, split="train").to(device)
    loader = data_lib.TensorBatches(
        images, batch_size=args.batch_size, train=True, channels_last=args.channels_last
    )
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    runs = []
    for name, config in configurations(args.width):
        net = ResNet(config).to(device)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        runs.append((name, net, opt, []))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_steps(net, opt, batches):
        for x, y in batches:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    batches = list(loader)
    for _name, net, opt, _times in runs:
        train_steps(net, opt, batches[: args.warmup])
    # Round-robin, so that a change in the machine's load hits every
    # configuration alike; the median over rounds resists stray slow steps.
    for _ in range(args.rounds):
        for _name, net, opt, times in runs:
            sync()
            start = time.perf_counter()
            train_steps(net, opt, batches[: args.steps])
            sync()
            times.append(time.perf_counter() - start)

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = (
            f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        )
    print(
        f"ResNet (width {args.width}) training steps, batch {args.batch_size}, {where}, "
        f"torch {torch.__version__}, amp {args.amp}, channels_last {args.channels_last}; "
        f"median of {args.rounds} rounds of {args.steps} steps\n"
    )
    print("| stem norm | images/s (median) | images/s (best round) | step time vs bn (median) |")
    print("| --- | --- | --- | --- |")
    base = None
    for name, _, _, times in runs:
        median = statistics.median(times) / args.steps
        best = min(times) / args.steps
        base = base or median
        print(
            f"| {name} | {args.batch_size / median:.1f} | {args.batch_size / best:.1f} "
            f"| {median / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

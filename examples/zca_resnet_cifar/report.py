"""Gather runs of train.py into the paper's table and plot their accuracy curves.

Runs are grouped by data set, normalisation and its setting (the group size d
for ZCA, d and the number of components k for PCA). For each group the table
gives the number of runs, the epochs they reached, the best ("Max Acc.") and
the mean ± sample standard deviation ("Mean Acc.") of the runs' accuracies.
A run's accuracy is its best test accuracy over the epochs (``--metric best``,
the number pytorch-cifar-style scripts report) or that of its last epoch
(``--metric last``).

Example::

    python examples/zca_resnet_cifar/report.py runs/* --output results.md --plot curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    path: Path
    args: dict
    epochs: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(data set, network, norm, setting): runs with the same key are repeats."""
        a = self.args
        norm = a.get("norm", "?")
        d = a.get("group_size")
        setting = {"bn": "-", "zca": f"{d}", "pca": f"{d}, k={a.get('n_components')}"}
        width, blocks = a.get("width", 64), list(a.get("blocks", [2, 2, 2, 2]))
        net = (
            "ResNet18"
            if (width, blocks) == (64, [2, 2, 2, 2])
            else (f"ResNet(w={width}, blocks={'-'.join(map(str, blocks))})")
        )
        suffix = {"bn": "", "zca": "+ZCA", "pca": "+PCA"}.get(norm, f"+{norm}")
        return (
            a.get("dataset_used", a.get("dataset", "?")),
            net + suffix,
            norm,
            setting.get(norm, "?"),
        )

    def accuracy(self, metric: str) -> float:
        values = [e["test_acc"] for e in self.epochs]
        return max(values) if metric == "best" else values[-1]


def load_run(path: Path) -> Run | None:
    """A run directory's args.json and metrics.jsonl; None (with a note) if unusable."""
    args_file, metrics_file = path / "args.json", path / "metrics.jsonl"
    if not args_file.is_file() or not metrics_file.is_file():
        print(f"report: skipping {path}: no args.json/metrics.jsonl", file=sys.stderr)
        return None
    run = Run(path, json.loads(args_file.read_text()))
    for line in metrics_file.read_text().splitlines():
        if line.strip():
            run.epochs.append(json.loads(line))
    if not run.epochs:
        print(f"report: skipping {path}: no finished epoch", file=sys.stderr)
        return None
    return run


_NORM_ORDER = {"bn": 0, "zca": 1, "pca": 2}


def _sort_key(key: tuple[str, str, str, str]):
    dataset, net, norm, setting = key
    head = setting.split(",")[0]
    return (
        dataset,
        net.split("+")[0],
        _NORM_ORDER.get(norm, 9),
        int(head) if head.isdigit() else -1,
        setting,
    )


def group_runs(runs: list[Run]) -> dict[tuple[str, str, str, str], list[Run]]:
    groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def markdown_table(runs: list[Run], metric: str = "best") -> str:
    """The paper's table (Max and Mean±std accuracy per model and d) in Markdown.

    Examples
    --------
    >>> r = Run(Path("a"), {"dataset_used": "cifar10", "norm": "zca", "group_size": 4},
    ...         [{"epoch": 1, "test_acc": 90.0}, {"epoch": 2, "test_acc": 91.0}])
    >>> s = Run(Path("b"), {"dataset_used": "cifar10", "norm": "zca", "group_size": 4},
    ...         [{"epoch": 1, "test_acc": 92.0}, {"epoch": 2, "test_acc": 89.0}])
    >>> print(markdown_table([r, s]))
    | Data set | Model | Dim. (d) | Runs | Epochs | Max Acc. | Mean Acc. |
    | --- | --- | --- | --- | --- | --- | --- |
    | cifar10 | ResNet18+ZCA | 4 | 2 | 2 | 92.00% | 91.50±0.71% |
    """
    lines = [
        "| Data set | Model | Dim. (d) | Runs | Epochs | Max Acc. | Mean Acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, net, _, setting), group in group_runs(runs).items():
        accs = [run.accuracy(metric) for run in group]
        epochs = sorted({len(run.epochs) for run in group})
        epochs_text = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
        if len(accs) > 1:
            mean = f"{statistics.mean(accs):.2f}±{statistics.stdev(accs):.2f}%"
        else:
            mean = f"{accs[0]:.2f}% (1 run)"
        lines.append(
            f"| {dataset} | {net} | {setting} | {len(accs)} | {epochs_text} "
            f"| {max(accs):.2f}% | {mean} |"
        )
    return "\n".join(lines)


def plot_curves(runs: list[Run], path: Path) -> None:
    """Test accuracy and training loss per epoch, one line per run, a colour per group."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((dataset, net, _, setting), group) in enumerate(group_runs(runs).items()):
        colour = colours[i % len(colours)]
        label = f"{dataset} {net}" + ("" if setting == "-" else f" d={setting}")
        for j, run in enumerate(group):
            epochs = [e["epoch"] for e in run.epochs]
            style = {
                "color": colour,
                "alpha": 0.85,
                "marker": "." if len(epochs) < 30 else None,
                "label": f"{label} ({len(group)} run{'s' * (len(group) > 1)})" if j == 0 else None,
            }
            ax_acc.plot(epochs, [e["test_acc"] for e in run.epochs], **style)
            ax_loss.plot(epochs, [e["train_loss"] for e in run.epochs], **style)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="out-dirs of train.py")
    p.add_argument(
        "--metric",
        choices=["best", "last"],
        default="best",
        help="a run's accuracy: its best epoch or its last",
    )
    p.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    p.add_argument("--plot", type=Path, help="write the accuracy curves to this PNG")
    args = p.parse_args(argv)
    runs = [run for path in args.runs if (run := load_run(path)) is not None]
    if not runs:
        print("report: no usable run among the given directories", file=sys.stderr)
        return 1
    table = markdown_table(runs, args.metric)
    print(table)
    if args.output:
        args.output.write_text(
            f"Test accuracy ({args.metric} epoch of each run), {len(runs)} runs.\n\n{table}\n"
        )
    if args.plot:
        plot_curves(runs, args.plot)
        print(f"curves written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

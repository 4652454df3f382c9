"""The benchmark page's figure: svdpi's cost relative to PyTorch's own operations, by size.

Reads the recorded benchmark outputs in ``docs/_static/benchmarks/`` (the
files the benchmark commands on the Benchmarks page write) and plots

* top, from ``bench_eig.md``: forward + backward of ``svdpi.torch.eig`` and
  of the paper's power-iteration loop, each divided by
  ``torch.linalg.eigh`` forward + backward, per batch × n;
* bottom, from ``bench_zca_layer.txt``: a training step of ``ZCAWhitening``
  and of the paper's loop layer, each divided by ``BatchNorm2d``'s, per
  group size ``d`` and input shape.

After rerunning the benchmarks, regenerate the committed PNG with::

    python docs/scripts/plot_benchmarks.py

Rows the parsers do not know (layers added to the benchmark later) are
skipped; a file with none of the expected rows is an error, not an empty plot.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "_static" / "benchmarks"
UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_time(text: str) -> float | None:
    """Seconds from a table cell such as ``"270 µs"`` or ``"15.33 ms"``; ``None`` if not run."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(ns|µs|us|ms|s)\s*", text)
    return float(match[1]) * UNITS[match[2]] if match else None


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """The pipe tables of a Markdown text, each a list of rows keyed by the header cells."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            header, *rows = block
            rows = [row for row in rows if not all(set(cell) <= set(":- ") for cell in row)]
            tables.append([dict(zip(header, row, strict=True)) for row in rows])
            block = []
    return tables


def eig_ratios(text: str) -> list[dict]:
    """Per ``batch × n`` row of the PyTorch table of ``bench_eig.md``: the ratios to eigh."""
    for table in markdown_tables(text):
        if table and "svdpi / eigh" in table[0]:
            break
    else:
        raise ValueError("no table with a 'svdpi / eigh' column in the eig benchmark output")
    rows = []
    for row in table:
        eigh = parse_time(row["torch.linalg.eigh fwd+bwd"])
        loop = parse_time(row.get("paper's PI loop", ""))
        rows.append(
            {
                "size": row["batch × n"],
                "svdpi": float(row["svdpi / eigh"]),
                "loop": loop / eigh if loop is not None else None,
            }
        )
    return rows


_LAYER_ROW = re.compile(
    r"^\s*(?P<shape>\d+(?:x\d+)+)?\s+(?P<layer>\S.*?)\s+(?:(?P<d>\d+)\s+)?"
    r"(?P<ms>[\d.]+)\s+(?P<ratio>[\d.]+)(?:\s+[\d.]+)?\s*$"
)


def layer_ratios(text: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per input shape of ``bench_zca_layer.txt``: ``{"zca"|"loop": [(d, time / BN2d), ...]}``."""
    result: dict[str, dict[str, list[tuple[int, float]]]] = {}
    shape = None
    for line in text.splitlines():
        match = _LAYER_ROW.match(line)
        if match is None:
            continue
        shape = match["shape"] or shape
        layer = match["layer"]
        kind = "zca" if layer.startswith("ZCAWhitening") else "loop" if "loop" in layer else None
        if kind is None or match["d"] is None or shape is None:
            continue  # BatchNorm2d itself (ratio 1) and layers this figure does not show
        entry = result.setdefault(shape, {"zca": [], "loop": []})
        entry[kind].append((int(match["d"]), float(match["ratio"])))
    if not result:
        raise ValueError("no ZCAWhitening rows in the layer benchmark output")
    return result


def source_digest(*texts: str) -> str:
    """SHA-256 of the recorded benchmark texts the figure is drawn from (newlines normalised)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update("\n".join(text.splitlines()).encode("utf-8") + b"\0")
    return digest.hexdigest()


def plot(eig_rows: list[dict], layer_rows: dict, output: Path, *, source: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Stacked, so that each panel stays readable in the page's narrow text column.
    fig, (left, right) = plt.subplots(2, 1, figsize=(6.4, 8.4), layout="constrained")

    positions = range(len(eig_rows))
    left.plot(positions, [r["svdpi"] for r in eig_rows], "o-", color="C0", label="svdpi.torch.eig")
    looped = [(i, r["loop"]) for i, r in enumerate(eig_rows) if r["loop"] is not None]
    if looped:
        left.plot(*zip(*looped, strict=True), "s--", color="C3", label="paper's PI loop")
    left.set_xticks(list(positions), [r["size"] for r in eig_rows])
    left.set_xlabel("batch × n")
    left.set_ylabel("time / torch.linalg.eigh")
    left.set_title("eigendecomposition, forward + backward")

    for (shape, series), color in zip(layer_rows.items(), ("C0", "C2", "C1", "C4"), strict=False):
        batch = shape.split("x")[0]
        for kind, style, name in (("zca", "o-", "ZCAWhitening"), ("loop", "s--", "paper's loop")):
            if series[kind]:
                d, ratio = zip(*sorted(series[kind]), strict=True)
                right.plot(d, ratio, style, color=color, label=f"{name}, batch {batch}")
    right.set_xscale("log", base=2)
    right.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    channels_and_image = next(iter(layer_rows)).split("x", 1)[1].replace("x", " × ")
    right.set_xlabel(f"group size d ({channels_and_image} activations)")
    right.set_ylabel("time / BatchNorm2d")
    right.set_title("whitening layer, one training step")

    for ax, reference in ((left, "torch.linalg.eigh"), (right, "BatchNorm2d")):
        ax.axhline(1.0, color="black", lw=1)
        ax.annotate(reference, (0.01, 1.0), xycoords=("axes fraction", "data"), va="bottom")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylim(bottom=0.8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    # No version or date in the PNG, so an unchanged input gives an unchanged file;
    # the digest of the input lets a test notice a figure older than its data.
    fig.savefig(output, dpi=110, metadata={"Software": None, "Source": source})
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eig", type=Path, default=BENCHMARKS / "bench_eig.md")
    parser.add_argument("--layer", type=Path, default=BENCHMARKS / "bench_zca_layer.txt")
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "ratios.png")
    args = parser.parse_args(argv)
    eig_text = args.eig.read_text(encoding="utf-8")
    layer_text = args.layer.read_text(encoding="utf-8")
    source = f"sha256 {source_digest(eig_text, layer_text)} of {args.eig.name}, {args.layer.name}"
    plot(eig_ratios(eig_text), layer_ratios(layer_text), args.output, source=source)
    return args.output


if __name__ == "__main__":
    print(f"wrote {main()}")

"""svdpi.jax against JAX's own eigh, side by side: eig's gradient, sqrtm forward + backward.

Run: ``python benchmarks/bench_eig_jax.py`` (``--quick`` for a smoke run,
``--only eig`` or ``--only sqrtm`` for one table). Prints Markdown tables;
``--output FILE`` also writes them to a file.

Eigendecomposition: both candidates are the same loss, ``<ḡλ, λ> + <ḡV, V>``
over all eigenpairs (eigh's ascending output re-sorted to svdpi's descending
order), its gradient taken with ``jax.grad``. Shapes are those of the
PyTorch table in ``bench_eig.py``.

Matrix square root: ``jax.value_and_grad`` of ``<Ḡ, √A>``, through
``svdpi.jax.sqrtm`` (``method="exact"``, the default: one custom_jvp whose
backward is the core's Daleckii–Krein VJP) and through the textbook
``V diag(√λ) Vᵀ`` on ``jnp.linalg.eigh``, which JAX differentiates itself.
Shapes are issue 15's ``(32, 64)`` and ``(8, 256)``.

Every function is ``jax.jit``-compiled and each call ends with
``block_until_ready``; float32 (JAX's default) unless ``--dtype float64``.

Robust to load spikes on a shared machine: the candidates are timed in
interleaved rounds (their order alternating from round to round), each
round a batch of calls lasting about ``--min-seconds``; the table gives the
median and the minimum over the rounds, and the ratios of both. A spike
inflates a few rounds of one candidate, which moves neither statistic much.
By default XLA runs on one CPU thread (``--threads all`` to lift that),
as the PyTorch table does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

SHAPES = [(16, 4), (8, 8), (4, 16), (1, 64), (4, 128), (1, 512)]
SQRTM_SHAPES = [(32, 64), (8, 256)]


def _set_threads(threads: str) -> None:
    """Restrict XLA's CPU backend to one thread; only effective before JAX starts."""
    if threads == "1":
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def _problem(batch, n, dtype, seed=0):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n, 2 * n))
    a = x @ np.swapaxes(x, -1, -2) / (2 * n) + 1e-3 * np.eye(n)
    grad_w = rng.standard_normal((batch, n))
    grad_v = rng.standard_normal((batch, n, n))
    return tuple(jnp.asarray(array, dtype=dtype) for array in (a, grad_w, grad_v))


def candidates(a, grad_w, grad_v):
    """``{name: () -> gradient}``: the two jitted gradients of the same loss, ready to time."""
    import jax
    import jax.numpy as jnp

    import svdpi.jax

    def svdpi_loss(m):
        w, v = svdpi.jax.eig(m)
        return jnp.sum(grad_w * w) + jnp.sum(grad_v * v)

    def eigh_loss(m):
        w, v = jnp.linalg.eigh(m)
        # Ascending to descending, so that both losses weight the same eigenpairs.
        return jnp.sum(grad_w * w[..., ::-1]) + jnp.sum(grad_v * v[..., ::-1])

    svdpi_grad = jax.jit(jax.grad(svdpi_loss))
    eigh_grad = jax.jit(jax.grad(eigh_loss))
    return {
        "svdpi": lambda: svdpi_grad(a).block_until_ready(),
        "eigh": lambda: eigh_grad(a).block_until_ready(),
    }


def sqrtm_candidates(a, grad):
    """``{name: () -> (value, gradient)}``: forward + backward of ``<Ḡ, √A>``, jitted."""
    import jax
    import jax.numpy as jnp

    import svdpi.jax

    def svdpi_loss(m):
        return jnp.sum(grad * svdpi.jax.sqrtm(m))

    def eigh_loss(m):
        w, v = jnp.linalg.eigh(m)
        root = (v * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(v, -1, -2)
        return jnp.sum(grad * root)

    svdpi_step = jax.jit(jax.value_and_grad(svdpi_loss))
    eigh_step = jax.jit(jax.value_and_grad(eigh_loss))
    return {
        "svdpi": lambda: jax.block_until_ready(svdpi_step(a)),
        "eigh": lambda: jax.block_until_ready(eigh_step(a)),
    }


def time_interleaved(functions, *, rounds, min_seconds):
    """``{name: [seconds per call, one per round]}``, rounds interleaved, order alternating."""
    repeats = {}
    for name, fn in functions.items():
        fn()  # compile
        fn()
        start = time.perf_counter()
        fn()
        repeats[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-7)))
    samples = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            fn, count = functions[name], repeats[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def table(shapes, dtype, rounds, min_seconds, kind="eig"):
    from _timing import format_time

    header = {
        "eig": "| batch × n | svdpi.jax.eig grad (median) | jnp.linalg.eigh grad (median) | ",
        "sqrtm": "| batch × n | svdpi.jax.sqrtm fwd+bwd (median) | eigh-based sqrtm fwd+bwd "
        "(median) | ",
    }[kind]
    rows = [
        header + "svdpi / eigh (median) | svdpi / eigh (min) |",
        "|---|---|---|---|---|",
    ]
    for batch, n in shapes:
        a, grad_w, grad_v = _problem(batch, n, dtype)
        functions = candidates(a, grad_w, grad_v) if kind == "eig" else sqrtm_candidates(a, grad_v)
        samples = time_interleaved(functions, rounds=rounds, min_seconds=min_seconds)
        median = {name: statistics.median(values) for name, values in samples.items()}
        least = {name: min(values) for name, values in samples.items()}
        rows.append(
            f"| {batch} × {n} | {format_time(median['svdpi'])} | "
            f"{format_time(median['eigh'])} | {median['svdpi'] / median['eigh']:.2f} | "
            f"{least['svdpi'] / least['eigh']:.2f} |"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--min-seconds", type=float, default=0.02, help="per timed batch")
    parser.add_argument("--threads", choices=["1", "all"], default="1")
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--only", choices=["eig", "sqrtm"], help="one table only")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    _set_threads(args.threads)

    import jax
    from _timing import machine_description

    import svdpi

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = getattr(jax.numpy, args.dtype)
    rounds = 3 if args.quick else args.rounds
    min_seconds = 0.002 if args.quick else args.min_seconds
    lines = [
        f"Machine: {machine_description()}; jax {jax.__version__} "
        f"({'one XLA thread' if args.threads == '1' else 'all XLA threads'}); "
        f"svdpi {svdpi.__version__}.",
    ]
    if args.only in (None, "eig"):
        lines += [
            "",
            f"jax.jit(jax.grad(loss)), CPU, {args.dtype}, method='pi', num_iters = 19, all "
            f"eigenpairs differentiated ({rounds} interleaved rounds):",
            "",
            *table(SHAPES[:2] if args.quick else SHAPES, dtype, rounds, min_seconds),
        ]
    if args.only in (None, "sqrtm"):
        lines += [
            "",
            f"jax.jit(jax.value_and_grad(<Ḡ, √A>)), CPU, {args.dtype}, svdpi method='exact' "
            f"against JAX's derivative of eigh ({rounds} interleaved rounds):",
            "",
            *table([(2, 16)] if args.quick else SQRTM_SHAPES, dtype, rounds, min_seconds, "sqrtm"),
        ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()

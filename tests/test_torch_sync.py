"""Sync whitening layers on 2 CPU processes (gloo) against one process on the full batch."""

from __future__ import annotations

import gc
import os
import pathlib
import socket
import sys
import weakref

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import svdpi.torch  # noqa: E402

# Unequal per-rank batch sizes: the statistics must weight ranks by their sample count.
RANK_SIZES = (3, 6)
SHAPE = (4, 5)  # spatial dims
CHANNELS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    generator = torch.Generator().manual_seed(1234)
    n = sum(RANK_SIZES)
    x = torch.randn(n, CHANNELS, *SHAPE, generator=generator, dtype=torch.float64)
    x = x + 3.0 * torch.randn(1, CHANNELS, 1, 1, generator=generator, dtype=torch.float64)
    grad = torch.randn(n, CHANNELS, *SHAPE, generator=generator, dtype=torch.float64)
    return x, grad


def _layers():
    """(name, plain layer) pairs; the sync runs convert them with convert_sync_whitening."""
    torch.manual_seed(0)
    zca = svdpi.torch.ZCAWhitening(CHANNELS, num_groups=2, dtype=torch.float64)
    pca = svdpi.torch.PCADenoising(CHANNELS, n_components=3, num_groups=2, dtype=torch.float64)
    for layer in (zca, pca):
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.normal_()
    return {"zca": zca, "pca": pca}


def _step(layer, x, grad):
    """One training step; returns what must agree with the full-batch run."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    out = {"y": y.detach(), "x_grad": x.grad}
    out.update({f"{k}_grad": p.grad for k, p in layer.named_parameters()})
    out.update({k: b.clone() for k, b in layer.named_buffers()})
    layer.eval()
    out["eval"] = layer(x.detach())
    return out


def _forward_mode(layer, x, tangent):
    """Output tangent in training by eager forward-mode AD (torch.autograd.forward_ad)."""
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level():
        return fwad.unpack_dual(layer(fwad.make_dual(x, tangent))).tangent


def _tangent():
    n = sum(RANK_SIZES)
    generator = torch.Generator().manual_seed(99)
    return torch.randn(n, CHANNELS, *SHAPE, generator=generator, dtype=torch.float64)


def _worker(rank, world_size, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        x, grad = _data()
        start = sum(RANK_SIZES[:rank])
        part = slice(start, start + RANK_SIZES[rank])
        results = {}
        for name, layer in _layers().items():
            sync = svdpi.torch.convert_sync_whitening(layer)
            assert type(sync).__name__.startswith("Sync")
            results[name] = _step(sync, x[part], grad[part])
        # An output whose autograd graph is still alive when the group is
        # destroyed: the graph must not keep the group alive (0.1's did, and
        # gloo then aborted the process at interpreter exit in about a third
        # of the runs).
        layer = svdpi.torch.convert_sync_whitening(_layers()["zca"])
        alive = layer(x[part].clone().requires_grad_(True))
        alive.sum().backward()
        group = weakref.ref(dist.group.WORLD)
        # A rank leaving before the other has finished makes gloo abort at exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    gc.collect()
    results["group_freed"] = group() is None
    assert alive.grad_fn is not None
    torch.save(results, pathlib.Path(out_dir) / f"rank{rank}.pt")


def _forward_mode_worker(rank, world_size, port, out_dir):
    # Apart from _worker: PyTorch's own forward-mode AD takes references to the
    # default process group (any dual-tensor arithmetic does), which would
    # defeat _worker's check that the layer's graphs do not keep it alive.
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        x, _ = _data()
        tangent = _tangent()
        start = sum(RANK_SIZES[:rank])
        part = slice(start, start + RANK_SIZES[rank])
        results = {}
        for name, layer in _layers().items():
            sync = svdpi.torch.convert_sync_whitening(layer)
            results[name] = _forward_mode(sync, x[part], tangent[part])
            try:
                torch.func.jvp(sync, (x[part],), (tangent[part],))
            except NotImplementedError as error:
                results[f"{name}_func_error"] = str(error)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, pathlib.Path(out_dir) / f"rank{rank}.pt")


def _spawn(worker, out_dir):
    # spawn pickles the worker by module name; the children import this module
    # as tests.test_torch_sync, so the repository root must be on their path.
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    mp.spawn(worker, args=(len(RANK_SIZES), _free_port(), str(out_dir)), nprocs=len(RANK_SIZES))
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(len(RANK_SIZES))]


@pytest.fixture(scope="module")
def sync_results(tmp_path_factory):
    return _spawn(_worker, tmp_path_factory.mktemp("sync"))


def test_autograd_graph_does_not_keep_the_process_group_alive(sync_results):
    assert [r["group_freed"] for r in sync_results] == [True] * len(RANK_SIZES)


@pytest.mark.parametrize("name", ["zca", "pca"])
def test_sync_matches_full_batch(sync_results, name):
    x, grad = _data()
    full = _step(_layers()[name], x, grad)
    ranks = [r[name] for r in sync_results]
    for key in ("y", "x_grad", "eval"):
        # Each rank holds its slice of the full-batch result.
        got = torch.cat([r[key] for r in ranks])
        torch.testing.assert_close(got, full[key], rtol=1e-9, atol=1e-10, msg=key)
    for key in ("weight_grad", "bias_grad"):
        # DDP sums (averages) parameter gradients over ranks: the sum is the full-batch one.
        got = sum(r[key] for r in ranks)
        torch.testing.assert_close(got, full[key], rtol=1e-9, atol=1e-10, msg=key)
    for key, value in full.items():
        if key.startswith("running") or key == "num_batches_tracked":
            for r in ranks:
                torch.testing.assert_close(r[key], value, rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_forward_mode_matches_full_batch(tmp_path):
    # Eager forward-mode AD (torch.autograd.forward_ad) in training: the
    # tangents of the statistics are all-reduced like the statistics, so each
    # rank gets its slice of the full-batch tangent. torch.func transforms of
    # a synchronised layer raise instead of computing something per rank.
    ranks = _spawn(_forward_mode_worker, tmp_path)
    x, _ = _data()
    for name, layer in _layers().items():
        expected = _forward_mode(layer, x, _tangent())
        got = torch.cat([r[name] for r in ranks])
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10, msg=name)
        for r in ranks:
            assert "torch.func transforms" in r[f"{name}_func_error"]
            assert "not supported" in r[f"{name}_func_error"]


def test_sync_layer_without_process_group_is_the_plain_layer():
    x, grad = _data()
    for name, layer in _layers().items():
        expected = _step(layer, x, grad)
        got = _step(svdpi.torch.convert_sync_whitening(_layers()[name]), x, grad)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_convert_sync_whitening_shares_state_and_recurses():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1),
        svdpi.torch.ZCAWhitening(8, num_groups=4, min_eigenvalue=1e-3),
        torch.nn.Sequential(svdpi.torch.PCADenoising(8, n_components=2)),
    )
    net[1].eval()
    weight, running = net[1].weight, net[1].running_whitening
    converted = svdpi.torch.convert_sync_whitening(net, process_group=None)
    assert converted is net
    assert isinstance(net[1], svdpi.torch.SyncZCAWhitening)
    assert isinstance(net[2][0], svdpi.torch.SyncPCADenoising)
    assert net[1].weight is weight
    assert net[1].running_whitening is running
    assert not net[1].training
    assert net[2][0].training
    assert net[1].min_eigenvalue == 1e-3
    assert net[1].num_groups == 4
    assert net[2][0].n_components == 2
    # Converting again leaves the synchronised layers alone.
    layer = net[1]
    assert svdpi.torch.convert_sync_whitening(net)[1] is layer
    single = svdpi.torch.convert_sync_whitening(svdpi.torch.ZCAWhitening(4))
    assert isinstance(single, svdpi.torch.SyncZCAWhitening)

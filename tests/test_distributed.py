"""detlearn.distributed and fit under torchrun: two processes compute what one does.

The tests that need several processes launch ``torchrun`` (as ``python -m
torch.distributed.run --standalone``, which picks a free port) with two gloo
processes on the CPU, a few steps on a few images each; a subprocess timeout
bounds them, so a hang fails instead of blocking.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from detlearn import distributed
from detlearn.__main__ import main
from detlearn.data import ShapesDataset
from detlearn.models import TinyDetector
from detlearn.train import RECIPES, fit, read_checkpoint

TIMEOUT = 240  # seconds for one torchrun launch: far above what it needs, but bounded


def torchrun(*args, timeout=TIMEOUT):
    """``torchrun --standalone --nproc-per-node 2 ARGS``: the finished process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun would set it, silently
    for name in distributed.TORCHRUN_VARIABLES:  # no outer group leaks in
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", *map(str, args)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def run_cli(*argv):
    """``main(argv)`` in this process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# --- the command line on two processes and on one ------------------------------

# TinyDetector and the detect recipe (the two-stage detector draws its training RoIs
# at random in each process, so its runs depend on the number of processes), in
# float64 so that rounding stays far below what is compared (in float32, max
# pooling's near ties and Adam's first steps amplify rounding differences: see the
# chapter "Scaling out")
TRAIN = ("train", "detect", "--model", "tiny", "--steps", 3, "--batch-size", 16,
         "--num-images", 32, "--precision", "float64")  # fmt: skip


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The same training run on two processes (torchrun) and on one (in process)."""
    root = tmp_path_factory.mktemp("ddp")
    two = torchrun("-m", "detlearn", *TRAIN, "--out", root / "two")
    assert two.returncode == 0, two.stderr
    code, out, err = run_cli(*TRAIN, "--quiet", "--out", root / "one")
    assert code == 0, err
    return root, two, out


def test_two_processes_end_with_the_weights_of_one(two_and_one):
    root, _, _ = two_and_one
    one = read_checkpoint(root / "one")["state_dict"]
    two = read_checkpoint(root / "two")["state_dict"]
    assert one.keys() == two.keys()
    for name, value in one.items():
        assert (
            two[name].dtype
            == value.dtype
            == (torch.float64 if value.is_floating_point() else torch.int64)
        )
        # parameters moved by about 1e-3 per step; the two runs differ by ~1e-13
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-9, msg=name)


def test_only_rank_zero_prints_shows_progress_and_writes(two_and_one):
    root, two, one_out = two_and_one
    assert two.stdout.count("saved ") == 1 and str(root / "two") in two.stdout
    assert two.stderr.count(" 0/3 ") == 1  # one progress bar: rank 0's
    assert sorted(p.name for p in (root / "two").iterdir()) == ["checkpoint.pt"]
    extra = read_checkpoint(root / "two")["extra"]
    assert extra["processes"] == 2 and extra["batch_size"] == 16 and extra["steps"] == 3
    assert read_checkpoint(root / "one")["extra"]["processes"] == 1
    final_loss = [line.split("final loss ")[1] for line in (two.stdout, one_out)]
    assert final_loss[0] == final_loss[1]  # history holds the global batch's losses


# --- the building blocks, in two processes --------------------------------------

WORKER = """
import sys
import torch
from torch import nn
from detlearn import distributed
from detlearn.data import ShapesDataset
from detlearn.models import TinyDetector
from detlearn.train import evaluate_model, fit, predict

out = {}
with distributed.process_group() as world:
    # a BatchNorm on this process's shard of a global batch of 6 (float64)
    torch.manual_seed(0)
    x = torch.randn(6, 4, 3, 5, dtype=torch.float64) * 3 + 1
    weights = torch.randn(6, 4, 3, 5, dtype=torch.float64)  # a loss that tells outputs apart
    bn = nn.BatchNorm2d(4, momentum=None).double()
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    layer = distributed.CrossProcessBatchNorm2d.convert(bn)
    rows = world.shard(torch.arange(6))
    part = x[rows].requires_grad_()
    for _ in range(2):  # two steps: the running statistics average them
        y = layer(part)
    (y * weights[rows]).sum().backward()
    out["bn"] = dict(rows=rows, y=y.detach(), x_grad=part.grad, weight_grad=bn.weight.grad,
                     bias_grad=bn.bias.grad, running_mean=bn.running_mean,
                     running_var=bn.running_var, tracked=bn.num_batches_tracked)
    out["gathered"] = distributed.gather_shards(list(range(11))[world.rank :: world.size])

    # predictions shared out, and fit's evaluation and clock under two processes
    torch.manual_seed(0)
    data = ShapesDataset(16, image_size=48, seed=3)
    model = TinyDetector(data.num_classes, strides=(8, 16), sizes=((10.0,), (30.0,)),
                         score_thresh=0.0)  # many detections to compare
    held_out = ShapesDataset(5, image_size=48, seed=4)
    # one image per forward pass: the same arithmetic for each image either way
    out["predict"] = (predict(model, held_out, batch_size=1, shard=True),
                      predict(model, held_out, batch_size=1))
    history = fit(model, data, steps=2, batch_size=8, progress=False,
                  val_dataset=ShapesDataset(5, image_size=48, seed=4))
    out["history"] = (history.losses, history.metrics)
    out["alone"] = evaluate_model(model, held_out)  # every image, in this process
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    out["batch_norm_back"] = all(
        type(m) is nn.BatchNorm2d for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    out["seconds_steps"] = fit(model, data, seconds=1.0, batch_size=8, progress=False).steps
    torch.save(out, f"{sys.argv[1]}/rank{world.rank}.pt")
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """What WORKER saved in each of two processes: ``[rank 0's, rank 1's]``."""
    root = tmp_path_factory.mktemp("worker")
    (root / "worker.py").write_text(WORKER)
    done = torchrun(root / "worker.py", root)
    assert done.returncode == 0, done.stderr
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_cross_process_batch_norm_is_batch_norm_over_the_global_batch(worker):
    torch.manual_seed(0)  # the worker's global batch, loss weights and layer
    x = torch.randn(6, 4, 3, 5, dtype=torch.float64) * 3 + 1
    weights = torch.randn(6, 4, 3, 5, dtype=torch.float64)
    bn = nn.BatchNorm2d(4, momentum=None).double()
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    x.requires_grad_()
    for _ in range(2):
        y = bn(x)
    (y * weights).sum().backward()
    ranks = [w["bn"] for w in worker]
    assert sorted(torch.cat([r["rows"] for r in ranks]).tolist()) == list(range(6))
    close = {"rtol": 1e-12, "atol": 1e-12}
    for r in ranks:
        torch.testing.assert_close(r["y"], y.detach()[r["rows"]], **close)
        torch.testing.assert_close(r["x_grad"], x.grad[r["rows"]], **close)
        torch.testing.assert_close(r["running_mean"], bn.running_mean, **close)
        torch.testing.assert_close(r["running_var"], bn.running_var, **close)
        assert r["tracked"] == bn.num_batches_tracked == 2
    # each process holds its shard's share of the parameters' gradients (DDP sums them)
    torch.testing.assert_close(sum(r["weight_grad"] for r in ranks), bn.weight.grad, **close)
    torch.testing.assert_close(sum(r["bias_grad"] for r in ranks), bn.bias.grad, **close)


def test_gather_shards_restores_the_order(worker):
    assert worker[0]["gathered"] == worker[1]["gathered"] == list(range(11))


def test_shared_predictions_equal_one_process(worker):
    for rank in worker:
        (shared, shared_targets), (alone, targets) = rank["predict"]
        assert len(shared) == len(shared_targets) == 5
        for a, b in zip(shared + shared_targets, alone + targets, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_under_two_processes_agrees_everywhere(worker):
    (losses0, metrics0), (losses1, metrics1) = (w["history"] for w in worker)
    assert losses0 == losses1  # the global batch's losses, the same in every process
    assert metrics0 == metrics1 and metrics0[0]["step"] == 2
    for name, value in worker[0]["state"].items():
        assert torch.equal(worker[1]["state"][name], value), name
    # the evaluation shared out between the processes is that of the trained model
    for rank in worker:
        assert rank["history"][1][0] == {"epoch": 1, "step": 2, **rank["alone"]}
    assert all(w["batch_norm_back"] for w in worker)  # fit put the model's own layers back
    # a wall-clock budget: every process stops at rank 0's step
    assert worker[0]["seconds_steps"] == worker[1]["seconds_steps"] >= 1


# --- a failure in one process ends the run -------------------------------------

FAILING = '''
import torch
from detlearn import distributed
from detlearn.data import ShapesDataset
from detlearn.models import TinyDetector
from detlearn.train import fit


class Fragile(TinyDetector):
    """Fails in rank 1's third step, while rank 0 waits for its gradients."""

    steps = 0

    def forward(self, images, targets=None):
        self.steps += 1
        if distributed.current().rank == 1 and self.steps == 3:
            raise RuntimeError("rank 1 gives up at step 3")
        return super().forward(images, targets)


with distributed.process_group():
    data = ShapesDataset(16, image_size=48)
    model = Fragile(data.num_classes, strides=(8, 16), sizes=((10.0,), (30.0,)))
    fit(model, data, steps=1000, batch_size=4, progress=False)
'''


def test_a_failing_process_ends_the_run_with_its_error(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    # without torchrun stopping rank 0, it would wait for rank 1 for 30 minutes
    done = torchrun(tmp_path / "failing.py")
    assert done.returncode != 0
    assert "RuntimeError: rank 1 gives up at step 3" in done.stderr


def test_a_failing_command_line_names_its_rank(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RANK", "1")  # as torchrun sets it (no group is made: no MASTER_*)
    code, out, err = run_cli("train", "classify", "--steps", 1, "--num-images", 8, "--quiet",
                             "--out", blocker / "run")  # fmt: skip
    assert code == 1 and out == ""
    assert err.startswith("detlearn train: error (rank 1): ") and len(err.splitlines()) == 1


# --- in this process ------------------------------------------------------------


def test_world_shards_a_global_batch_like_distributed_sampler():
    batch = torch.arange(12)
    shards = [distributed.World(rank, 3).shard(batch) for rank in range(3)]
    assert [s.tolist() for s in shards] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    sampler = torch.utils.data.DistributedSampler(range(12), num_replicas=3, rank=1,
                                                  shuffle=False)  # fmt: skip
    assert list(sampler) == shards[1].tolist()
    assert distributed.World().shard(batch) is not None and distributed.World().main
    assert not distributed.World(2, 3).main


def test_global_batch_must_split_evenly():
    assert distributed.World(0, 4).check_batch(16) == 16
    with pytest.raises(ValueError, match="multiple of the 4 processes"):
        distributed.World(0, 4).check_batch(18)


def test_without_torchrun_nothing_happens(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    with distributed.process_group() as world:
        assert world == distributed.World() and distributed.current() == world
        assert not torch.distributed.is_initialized()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with distributed.replicated(model) as replica:
        assert replica is model
    with pytest.raises(ValueError, match="backend"), distributed.process_group(backend="mpi"):
        pass


def test_devices_and_backends(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.local_device("cuda") == torch.device("cuda")
    assert distributed.local_device("cpu") == torch.device("cpu")
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
        "LOCAL_RANK": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched_by_torchrun()
    assert distributed.local_device("cuda") == torch.device("cuda", 1)  # this process's GPU
    assert distributed.local_device("cuda:0") == torch.device("cuda", 0)  # as asked
    assert distributed.local_device("cpu") == torch.device("cpu")
    assert distributed.default_backend(torch.device("cuda", 1)) == "nccl"
    assert distributed.default_backend(torch.device("cpu")) == "gloo"


def test_convert_shares_parameters_and_is_batch_norm_alone():
    torch.manual_seed(0)
    model = TinyDetector(3, strides=(8, 16), sizes=((10.0,), (30.0,)))
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    parameters = [id(p) for p in model.parameters()]
    buffers = [id(b) for b in model.buffers()]
    converted = distributed.CrossProcessBatchNorm2d.convert(model)
    assert converted is model and len(norms) > 0
    for name, module in model.named_modules():
        if name in norms:
            assert type(module) is distributed.CrossProcessBatchNorm2d
    assert [id(p) for p in model.parameters()] == parameters
    assert [id(b) for b in model.buffers()] == buffers
    x = torch.rand(4, 8, 5, 5)
    alone = distributed.CrossProcessBatchNorm2d.convert(nn.BatchNorm2d(8))
    assert type(alone) is distributed.CrossProcessBatchNorm2d
    assert torch.equal(alone(x), nn.BatchNorm2d(8)(x))  # no process group: BatchNorm2d


def test_learning_rate_rule_for_another_global_batch():
    recipe = RECIPES["detect"]
    assert recipe.lr_for(recipe.batch_size) == recipe.lr
    assert recipe.lr_for(4 * recipe.batch_size) == pytest.approx(2 * recipe.lr)
    assert recipe.lr_for(recipe.batch_size // 4) == pytest.approx(recipe.lr / 2)
    assert math.isclose(recipe.lr_for(2 * recipe.batch_size), recipe.lr * math.sqrt(2))


def test_fit_rejects_a_bad_precision():
    with pytest.raises(ValueError, match="precision"):
        fit(TinyDetector(3), ShapesDataset(4, image_size=32), steps=1, precision="float16")


# --- CUDA ----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
class TestTwoGpus:
    def test_nccl_processes_end_with_the_weights_of_one(self, tmp_path):
        args = ("train", "detect", "--model", "tiny", "--steps", 3, "--batch-size", 16,
                "--num-images", 32, "--precision", "float64", "--device", "cuda",
                "--quiet")  # fmt: skip
        two = torchrun("-m", "detlearn", *args, "--out", tmp_path / "two")
        assert two.returncode == 0, two.stderr
        code, _, err = run_cli(*args, "--out", tmp_path / "one")
        assert code == 0, err
        one = read_checkpoint(tmp_path / "one")["state_dict"]
        two = read_checkpoint(tmp_path / "two")["state_dict"]
        for name, value in one.items():  # SyncBatchNorm's kernels round differently
            torch.testing.assert_close(two[name], value, rtol=1e-6, atol=1e-7, msg=name)

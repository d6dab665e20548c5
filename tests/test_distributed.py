"""Multi-process training: 2 CPU processes (gloo, 127.0.0.1) against one process.

The truth is a single-process run of the same trainer on the same global batches (the
two processes' local batches concatenated in rank order): DDP averages the local
mean-loss gradients, which is the gradient of the global mean loss, and the noise of
each sample is seeded by its position in the global batch. Float64 and a fixed number
of CG iterations make the two runs agree to rounding: a few ulps per step.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

import unrolled as ur
from unrolled import cli
from unrolled.apps.train import build_experiment, resolve_config
from unrolled.train import Trainer, distributed
from unrolled.train.seeding import STREAM_SHUFFLE, derive_seed

DTYPE = torch.float64
WORLD = 2


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.rand(8, 1, 12, 12, generator=g, dtype=DTYPE)


CONFIG = """
seed = 7
nproc = 2
device = "cpu"

[physics]
kernel_sigma = 1.0
padding = "valid"
noise_sigma = 0.05

[model]
algorithm = "hqs"
layers = 2
depth = 2
features = 4

[solver]
# A fixed number of iterations (tol is out of reach in 4): every sample runs the same
# CG steps whatever batch it is in.
max_iter = 4
tol = 1e-12
backward = "implicit"

[data]
source = "deadleaves"
size = 12
channels = 1
train_images = 8
eval_images = 3

[train]
epochs = 3
batch_size = 2
lr = 0.01
dtype = "float64"
max_steps = 5          # 2 steps per epoch per process: a reshuffle is included
checkpoint_every = 2
progress = false
plots = false
"""


class GlobalBatches:
    """The global batches of the 2-process run: per epoch, the two ranks' local batches
    (from the DistributedSampler each process builds) concatenated in rank order."""

    def __init__(self, dataset, seed: int, world: int, local_batch: int):
        self.local_batch = local_batch
        shuffle_seed = derive_seed(seed, STREAM_SHUFFLE) >> 2  # what make_loader uses
        self.samplers = [
            DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=True, seed=shuffle_seed)
            for r in range(world)
        ]

    def set_epoch(self, epoch: int) -> None:
        for s in self.samplers:
            s.set_epoch(epoch)

    def __len__(self):
        return len(self.samplers[0]) // self.local_batch

    def __iter__(self):
        per_rank = [list(s) for s in self.samplers]
        b = self.local_batch
        for t in range(len(self)):
            yield [i for idx in per_rank for i in idx[t * b : (t + 1) * b]]


def test_unrolled_train_nproc_2_equals_one_process_on_the_global_batch(tmp_path, capsys):
    config_path = tmp_path / "run.toml"
    config_path.write_text(CONFIG)
    out = tmp_path / "ddp"
    code = cli.main(["train", "--config", str(config_path), "--out", str(out)])
    assert code == 0
    assert "starting 2 processes" in capsys.readouterr().out
    ddp = ur.train.load_checkpoint(out / "latest.pt")
    assert ddp["step"] == 5

    # The truth: one process, same config, batches = the 2 local batches concatenated.
    config = resolve_config(
        cli.build_parser().parse_args(
            ["train", "--config", str(config_path), "--out", str(tmp_path / "one"), "--nproc", "1"]
        )
    )
    parts = build_experiment(config)
    local = parts["train_data"]
    assert not isinstance(local.sampler, DistributedSampler)  # no process group here
    batches = GlobalBatches(local.dataset, seed=7, world=2, local_batch=2)
    loader = DataLoader(local.dataset, batch_sampler=batches, collate_fn=local.collate_fn)
    single = Trainer(
        parts["model"],
        parts["physics"],
        loader,
        eval_data=parts["eval_data"],
        **parts["trainer_kwargs"],
    )
    assert single.world_size == 1
    initial = {k: v.clone() for k, v in single.module.state_dict().items()}
    single.fit()
    assert single.step == 5

    ref = single.module.state_dict()
    worst = max(float((ddp["model"][k] - v).abs().max()) for k, v in ref.items())
    assert worst <= 1e-10, worst
    # ... and the parameters moved: this is not a comparison of two initial states.
    assert max(float((ref[k] - initial[k]).abs().max()) for k in ref) > 1e-3
    # The logged loss is the global batch's mean (reduced over processes), PSNR likewise.
    ddp_losses = [r["loss"] for r in ddp["history"]["train"]]
    assert ddp_losses == pytest.approx([r["loss"] for r in single.history["train"]], rel=1e-12)
    assert [e["n"] for e in ddp["history"]["eval"]] == [3, 3, 3]
    for a, b in zip(ddp["history"]["eval"], single.history["eval"], strict=True):
        assert a["psnr"] == pytest.approx(b["psnr"], rel=1e-12)
        assert a["psnr_baseline"] == pytest.approx(b["psnr_baseline"], rel=1e-12)
    # Only rank 0 wrote: one row per step (two writers would have doubled them).
    rows = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5]
    # ... and the evaluations did not wipe the training log (nor the other way round).
    evals = (out / "eval_log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in evals] == [e["step"] for e in ddp["history"]["eval"]]
    assert len((out / "train_log.csv").read_text().splitlines()) == 1 + 5


def test_measurement_noise_is_per_global_position():
    # The noise of a sample depends on its position in the global batch only: measuring
    # the two halves as ranks 0 and 1 would (offset rank * B) gives the whole batch's noise.
    kernel = ur.physics.gaussian_kernel(1.0, dtype=DTYPE)
    physics = ur.physics.Blur(kernel, padding="valid", noise=ur.physics.GaussianNoise(0.05))
    model = ur.unfolded.HQS(layers=1, denoiser=ur.models.DnCNN(1, 1, depth=2, features=2))
    x = images()[:4]
    trainer = Trainer(model.to(DTYPE), physics, [x], progress=False, tensorboard=False)
    whole = trainer.measure(x, epoch=1, iteration=3)
    halves = []
    for rank in range(WORLD):
        trainer_rank = type(trainer).rank
        try:
            type(trainer).rank = property(lambda self, r=rank: r)
            halves.append(trainer.measure(x[2 * rank : 2 * rank + 2], epoch=1, iteration=3))
        finally:
            type(trainer).rank = trainer_rank
    assert torch.equal(torch.cat(halves), whole)
    clean = trainer.physics.A(x)
    assert float((whole - clean).std()) == pytest.approx(0.05, rel=0.3)  # noise is there
    assert not torch.equal(whole, trainer.measure(x, epoch=1, iteration=4))


def test_launch_reports_failures_and_bad_arguments():
    with pytest.raises(ValueError, match="nproc"):
        distributed.launch(print, 0)
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda:0") == "nccl"
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert not distributed.is_distributed()

"""Reproducible randomness for training: per-step seeds, seeded loaders, RNG snapshots.

The trainer never lets a random draw depend on how many draws came before it in the
*process*: the measurement noise of step ``(epoch, iteration)`` and the shuffling of
``epoch`` are seeded from ``(seed, epoch, iteration)`` alone. A run resumed from a
checkpoint therefore sees the same noise and the same data order as an uninterrupted
one. What remains on the global generators (dropout, augmentations drawn in the main
process) is restored from the checkpoint's RNG snapshot.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .._validation import check_int

__all__ = [
    "derive_seed",
    "seeded_noise",
    "make_loader",
    "epoch_batches",
    "rng_state",
    "set_rng_state",
]

# Independent streams derived from the one user seed.
STREAM_TRAIN_NOISE = 1
STREAM_EVAL_NOISE = 2
STREAM_SHUFFLE = 3
STREAM_LOADER = 4
STREAM_BASELINE_NOISE = 5


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (``numpy.random.SeedSequence``).

    Nearby inputs (step 7 and step 8) give unrelated seeds.
    """
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ValueError(f"seed parts: expected integers >= 0, got {parts!r}")
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def _generators(module: nn.Module) -> list[torch.Generator]:
    """The ``generator`` attributes (noise models) found in ``module`` and its children."""
    found = []
    for m in module.modules():
        g = getattr(m, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


@contextlib.contextmanager
def seeded_noise(physics: nn.Module, seed: int, device: torch.device | str = "cpu"):
    """Make the noise drawn inside the block a function of ``seed`` only.

    Every ``torch.Generator`` held by a sub-module of ``physics`` (e.g.
    ``GaussianNoise.generator``) is reseeded from ``seed``; noise drawn from the global
    generator is seeded too, inside ``torch.random.fork_rng`` so the global stream
    outside the block (dropout, augmentations) is left exactly as it was.
    """
    device = torch.device(device)
    for i, g in enumerate(_generators(physics)):
        g.manual_seed(derive_seed(seed, i))
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    *,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    distributed: bool | None = None,
    seed: int = 0,
    collate_fn=None,
) -> DataLoader:
    """A ``DataLoader`` whose order the :class:`~unrolled.train.Trainer` can reproduce.

    Single process: shuffling draws from the sampler's own ``torch.Generator`` and
    worker seeds from the loader's, both reseeded by the trainer at every epoch from
    ``(seed, epoch)``. Multi-process (``distributed=None``: when a process group with
    more than one member is initialised): a ``DistributedSampler`` gives each process
    its shard (``batch_size`` is then per process); its order is a function of
    ``(seed, epoch)``, the same on every process. Any ``DataLoader`` works with the
    trainer; this one just needs no adjustment.
    """
    check_int("batch_size", batch_size, minimum=1)
    check_int("seed", seed, minimum=0)
    if distributed is None:
        from .distributed import is_distributed

        distributed = is_distributed()
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        # DistributedSampler seeds its permutation with seed + epoch: keep room for epochs.
        sampler = DistributedSampler(
            dataset,
            shuffle=shuffle,
            seed=derive_seed(seed, STREAM_SHUFFLE) >> 2,
            drop_last=drop_last,
        )
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator()) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False if (shuffle or distributed) else None,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator(),
        collate_fn=collate_fn,
    )


def _prepare_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed the loader's shuffling and worker seeds for ``epoch``."""
    sampler = loader.sampler
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and hasattr(batch_sampler, "sampler"):
        sampler = batch_sampler.sampler
    # DistributedSampler and the like; datasets with per-epoch random crops.
    for s in {id(o): o for o in (sampler, batch_sampler, loader.dataset)}.values():
        if callable(getattr(s, "set_epoch", None)):
            s.set_epoch(epoch)
    if isinstance(sampler, RandomSampler):
        if sampler.generator is None:
            # Without its own generator the sampler seeds itself from the global RNG
            # when iteration starts, which a resumed run cannot replay.
            sampler.generator = torch.Generator()
        sampler.generator.manual_seed(derive_seed(seed, STREAM_SHUFFLE, epoch))
    if isinstance(loader.generator, torch.Generator):
        loader.generator.manual_seed(derive_seed(seed, STREAM_LOADER, epoch))


def epoch_batches(data: Iterable, seed: int, epoch: int, skip: int = 0) -> Iterator:
    """Iterate over ``data`` for ``epoch``, reproducibly, after skipping ``skip`` batches.

    A ``DataLoader`` is seeded per epoch (see :func:`make_loader`); its iterator is
    created with the global RNG forked and seeded, because creating it draws the
    workers' base seed. The skipped batches are loaded and dropped (under a forked RNG,
    so augmentations drawn while loading them do not shift the global stream): batches
    run through the same workers in the same order as in the uninterrupted run.
    """
    if isinstance(data, DataLoader):
        _prepare_epoch(data, seed, epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, STREAM_LOADER, epoch, 1))
        iterator = iter(data)
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                break
    return iterator


def rng_state() -> dict:
    """A snapshot of the global generators, made of tensors, lists and numbers only
    (so ``torch.load(weights_only=True)`` reads it back)."""
    py_version, py_state, py_gauss = random.getstate()
    # The legacy global numpy state is what third-party code draws from: snapshot it.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_name,
            [int(k) for k in np_keys],
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot made by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))  # noqa: NPY002
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

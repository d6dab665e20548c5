"""``Interleaved``: several datasets taken in turn, one item of each at a time."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from ._common import check_index

__all__ = ["Interleaved"]


class Interleaved(Dataset):
    """Item ``i`` is item ``i // k`` of dataset ``i % k`` (``k`` datasets), so every batch
    mixes the sources evenly; the length is ``k`` times the shortest one's.

    Mixing natural photographs with procedural images (:class:`DeadLeaves`) makes a
    restoration network generalise to photographs it never saw: the procedural images
    bring every scale, colour and edge orientation, the photographs real textures.
    ``set_epoch`` is passed on to the datasets that have it (per-epoch random crops).
    """

    def __init__(self, datasets: Sequence[Dataset]):
        datasets = list(datasets)
        if len(datasets) < 1:
            raise ValueError("datasets: expected at least one dataset, got none")
        if any(not hasattr(d, "__len__") for d in datasets):
            raise TypeError("datasets: expected datasets with a length (map-style)")
        self.datasets = datasets
        self._length = len(datasets) * min(len(d) for d in datasets)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int):
        i = check_index(index, len(self))
        k = len(self.datasets)
        return self.datasets[i % k][i // k]

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if callable(getattr(d, "set_epoch", None)):
                d.set_epoch(epoch)

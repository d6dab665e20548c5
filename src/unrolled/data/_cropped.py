"""Base class of the datasets of stored images: crop handling and the epoch counter."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .._validation import check_int
from ._common import center_crop, item_generator, pair, random_crop


class CroppedImages(Dataset):
    """Images ``(C, H, W)`` in ``[0, 1]``, optionally cropped to ``crop`` ``(h, w)``.

    Random crops (``random_crops=True``) draw their offset from a generator seeded by
    ``(seed, epoch, index)``: the same triple always gives the same crop, and ``set_epoch``
    moves every item to a fresh, still reproducible, crop. Otherwise crops are centred.

    Subclasses implement ``_num_items``, ``_image(i)`` (the uncropped tensor of item ``i``)
    and ``_source(i)`` (how errors name item ``i``).
    """

    def __init__(self, crop: int | tuple[int, int] | None, random_crops: bool, seed: int) -> None:
        self.crop: tuple[int, int] | None = None if crop is None else pair(crop, "crop")
        self.random_crops = bool(random_crops)
        self.seed = check_int("seed", seed, minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of epoch ``epoch`` (an int >= 0).

        With ``DataLoader(num_workers > 0, persistent_workers=True)`` the workers keep their
        own copy of the dataset, so call this before the loader's workers start.
        """
        self.epoch = check_int("epoch", epoch, minimum=0)

    def _num_items(self) -> int:
        raise NotImplementedError

    def _image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _source(self, index: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._num_items()

    def _crop(self, image: torch.Tensor, index: int) -> torch.Tensor:
        if self.crop is None:
            return image
        if self.random_crops:
            g = item_generator(self.seed, self.epoch, index)
            return random_crop(image, self.crop, g, self._source(index))
        return center_crop(image, self.crop, self._source(index))

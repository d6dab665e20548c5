"""``SampleImages``: the natural photographs that ship inside scikit-image's wheel."""

from __future__ import annotations

from pathlib import Path

import torch

from .._validation import check_choice, check_int
from ._common import check_channels, check_index, load_image
from ._cropped import CroppedImages

__all__ = ["SAMPLE_SPLITS", "SampleImages"]

# Files read straight from ``skimage.data.data_dir``, never through ``skimage.data``'s
# functions: those fall back to a pooch download for images missing from the wheel, and this
# dataset must never touch the network. Only photographs of natural scenes and textures are
# used (no synthetic images, text, microscopy or medical images); the stereo pair counts as
# two training images.
#: The fixed splits: name -> file names in ``skimage.data.data_dir``.
SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "brick.png",
        "camera.png",
        "coins.png",
        "grass.png",
        "gravel.png",
        "moon.png",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "rocket.jpg",
    ),
    "eval": ("astronaut.png", "chelsea.png", "coffee.png"),
}
SAMPLE_SPLITS["all"] = SAMPLE_SPLITS["train"] + SAMPLE_SPLITS["eval"]


def _data_dir() -> Path:
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError(
            "SampleImages needs scikit-image's bundled sample images: "
            "pip install scikit-image  (or: pip install unrolled[samples])"
        ) from err
    return Path(skimage.data.data_dir)


class SampleImages(CroppedImages):
    """scikit-image's bundled natural photographs as ``(channels, H, W)`` float32 tensors in
    ``[0, 1]``.

    Splits (fixed; see :data:`SAMPLE_SPLITS`):

    - ``"train"``: brick, camera, coins, grass, gravel, moon, motorcycle_left,
      motorcycle_right, rocket (9 images, 4 of them colour).
    - ``"eval"``: astronaut, chelsea, coffee (3 colour images).
    - ``"all"``: train then eval.

    Files are read from the installed wheel only (nothing is downloaded) and kept in memory as
    8 bits. ``channels=3`` repeats grey images into RGB; ``channels=1`` converts colour to
    grey. Crops as in :class:`ImageFolder`: random when ``random_crops`` (default: ``split ==
    "train"``), drawn from ``(seed, epoch, index)``, else centred. ``length`` (default: the
    number of images) lets an epoch hold several random crops per image: item ``i`` is a crop
    of image ``i % n``; it needs ``crop`` and random crops.

    Raises ``ImportError`` (saying ``pip install scikit-image``) when scikit-image is missing.
    """

    def __init__(
        self,
        split: str = "train",
        crop: int | tuple[int, int] | None = None,
        channels: int = 3,
        length: int | None = None,
        random_crops: bool | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("split", split, tuple(SAMPLE_SPLITS))
        super().__init__(
            crop, random_crops=split == "train" if random_crops is None else random_crops, seed=seed
        )
        self.split = split
        self.channels = check_channels(channels)
        self.names: tuple[str, ...] = tuple(Path(f).stem for f in SAMPLE_SPLITS[split])
        length = check_int("length", length, minimum=1, allow_none=True)
        if length is None:
            length = len(self.names)
        elif length != len(self.names) and (self.crop is None or not self.random_crops):
            raise ValueError(
                f"length: {length} differs from the {len(self.names)} images of split {split!r}, "
                "which only makes sense with crop set and random crops"
            )
        self.length = length
        folder = _data_dir()
        images = []
        for name in SAMPLE_SPLITS[split]:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"scikit-image sample {str(path)!r} is missing: this scikit-image install "
                    "does not ship it in its wheel (reinstall scikit-image >= 0.21)"
                )
            # Stored as 8 bits (these files are 8-bit): a quarter of the memory of float32.
            images.append(torch.round(load_image(path, self.channels) * 255).to(torch.uint8))
        self._images = images

    def _num_items(self) -> int:
        return self.length

    def _source(self, index: int) -> str:
        return f"{self.names[index % len(self.names)]!r} (scikit-image sample)"

    def _image(self, index: int) -> torch.Tensor:
        return self._images[index % len(self._images)]

    def __getitem__(self, index: int) -> torch.Tensor:
        i = check_index(index, len(self))
        return self._crop(self._image(i), i).to(torch.float32) / 255.0

    def __repr__(self) -> str:
        return (
            f"SampleImages(split={self.split!r}, images={len(self.names)}, length={len(self)}, "
            f"crop={self.crop}, channels={self.channels}, random_crops={self.random_crops}, "
            f"seed={self.seed})"
        )

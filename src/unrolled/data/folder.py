"""``ImageFolder``: every image file below a folder, as a dataset of tensors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ._common import _check_fits, check_channels, check_index, load_image
from ._cropped import CroppedImages

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder"]

#: File name endings read as images (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageFolder(CroppedImages):
    """The PNG/JPEG/BMP/TIFF files below ``path`` as ``(channels, H, W)`` float32 tensors in
    ``[0, 1]``.

    Files are found recursively (extensions case-insensitive) and sorted by their path relative
    to ``path``, so item ``i`` is the same file on every machine. ``channels=1`` gives grey
    (ITU-R 601-2 luma), ``channels=3`` RGB (grey files repeated); alpha is dropped; 8-bit
    files are scaled by 1/255 and 16-bit ones by 1/65535.

    ``crop`` (int or ``(h, w)``): random crops when ``train=True`` (drawn from
    ``(seed, epoch, index)``; see :meth:`set_epoch`), centre crops when ``train=False``. An
    image smaller than the crop raises a ``ValueError`` naming the file and both sizes. With
    ``crop=None`` images keep their own sizes, so batching needs them all to be equal.

    Unreadable files: by default files are only decoded when an item is read, and a file that
    fails raises an ``OSError`` naming it. ``check_files=True`` decodes every file once at
    construction (cost: one full read of the folder) and raises one ``ValueError`` listing
    every file that cannot be read or is smaller than the crop; ``skip_unreadable=True``
    instead leaves those files out, with one warning listing them; the remaining files are
    in :attr:`files`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        crop: int | tuple[int, int] | None = None,
        channels: int = 3,
        train: bool = True,
        skip_unreadable: bool = False,
        seed: int = 0,
        check_files: bool = False,
    ) -> None:
        super().__init__(crop, random_crops=train, seed=seed)
        self.channels = check_channels(channels)
        self.train = bool(train)
        self.root = Path(path)
        if not self.root.exists():
            raise FileNotFoundError(f"path {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"path {str(self.root)!r} is not a folder")
        files = sorted(
            (
                p
                for p in self.root.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            ),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not files:
            raise FileNotFoundError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {str(self.root)!r}"
            )
        if skip_unreadable or check_files:
            files = self._readable(files, skip=skip_unreadable)
            if not files:
                raise FileNotFoundError(f"no readable image files under {str(self.root)!r}")
        self.files: list[Path] = files

    def _readable(self, files: list[Path], skip: bool) -> list[Path]:
        good, bad = [], []
        for f in files:
            try:
                image = load_image(f, self.channels)
                if self.crop is not None:
                    _check_fits(image, self.crop, repr(str(f)))
            except (OSError, ValueError) as err:
                bad.append(str(err))  # names the file
            else:
                good.append(f)
        if bad and not skip:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise ValueError(
                f"{len(bad)} of {len(files)} image files under {str(self.root)!r} cannot be "
                f"used: {'; '.join(bad[:3])}{more}; remove them, or skip them "
                "(skip_unreadable=True, unrolled train --skip-bad-images)"
            )
        if bad:
            warnings.warn(
                f"ImageFolder skipped {len(bad)} unreadable file(s):\n" + "\n".join(bad),
                stacklevel=3,
            )
        return good

    def _num_items(self) -> int:
        return len(self.files)

    def _source(self, index: int) -> str:
        return repr(str(self.files[index]))

    def _image(self, index: int) -> torch.Tensor:
        return load_image(self.files[index], self.channels)

    def __getitem__(self, index: int) -> torch.Tensor:
        i = check_index(index, len(self))
        return self._crop(self._image(i), i).contiguous()

    def __repr__(self) -> str:
        return (
            f"ImageFolder({str(self.root)!r}, files={len(self)}, crop={self.crop}, "
            f"channels={self.channels}, train={self.train}, seed={self.seed})"
        )

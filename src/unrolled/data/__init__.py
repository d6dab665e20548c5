"""Datasets of ``(C, H, W)`` float32 images in ``[0, 1]``, and safe dataset downloads.

- :class:`DeadLeaves`: procedural occluding-disc images, a pure function of ``(seed, i)``.
- :class:`ImageFolder`: the image files below a folder, with random or centre crops.
- :class:`SampleImages`: scikit-image's bundled photographs, in fixed train/eval splits.
- :class:`Interleaved`: several datasets taken in turn (e.g. photographs and dead leaves).
- :func:`download_dataset`: fetch, checksum and safely unpack BSDS500, CBSD68 or any URL.
- :func:`safe_extract`: unpack a zip/tar archive, refusing members that escape the target.

All datasets return plain tensors, so ``torch.utils.data.DataLoader(ds, batch_size=8)`` works
as is whenever the items share a size (a ``crop``, or ``DeadLeaves``).
"""

from .archive import UnsafeArchiveError, safe_extract
from .deadleaves import DeadLeaves, paint_discs, power_law_radii
from .download import (
    KNOWN_DATASETS,
    ChecksumError,
    DownloadError,
    KnownDataset,
    cache_dir,
    dataset_dir,
    download_dataset,
)
from .folder import IMAGE_EXTENSIONS, ImageFolder
from .interleaved import Interleaved
from .samples import SAMPLE_SPLITS, SampleImages

__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS",
    "SAMPLE_SPLITS",
    "ChecksumError",
    "DeadLeaves",
    "DownloadError",
    "ImageFolder",
    "Interleaved",
    "KnownDataset",
    "SampleImages",
    "UnsafeArchiveError",
    "cache_dir",
    "dataset_dir",
    "download_dataset",
    "paint_discs",
    "power_law_radii",
    "safe_extract",
]

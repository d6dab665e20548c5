"""The demo's settings: one frozen dataclass, with the defaults that depend on the device."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field

import torch

from ..._validation import check_bool, check_choice, check_int, check_real
from ...linalg.prox import BACKWARD_MODES
from ..experiment import ENSEMBLE_SETTINGS

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_MODES",
    "PHYSICS",
    "PHYSICS_ALIASES",
    "DemoConfig",
    "Mode",
    "parse_data",
    "parse_modes",
]

#: Training passes by default: on 2 CPU cores the whole default run (three modes) ends
#: in about two minutes, and the loss has visibly fallen by then.
DEFAULT_EPOCHS = 3

#: The three runs the demo compares.
DEFAULT_MODES = ("unroll", "implicit", "implicit+ckpt")

# Sizes that depend on the device: (image size, training images, held-out images, batch).
CPU_SIZES = (32, 64, 6, 8)
CUDA_SIZES = (64, 480, 24, 32)

#: side of the held-out crops (blur): larger than the training crops, as the networks are
#: fully convolutional and a user's photographs are larger still
EVAL_SIZE = 128

#: the measurements ``--physics`` names: those of ``unrolled train --operator``, except that
#: single-coil MRI is ``singlecoil_mri`` here, as ``mri`` has always meant multi-coil MRI in
#: the demo (see :data:`PHYSICS_ALIASES`)
PHYSICS = (
    "blur",
    "inpainting",
    "downsampling",
    "compressed_sensing",
    "singlecoil_mri",
    "multicoil_mri",
)
#: other names ``--physics`` takes, and the measurement each stands for
PHYSICS_ALIASES = {"mri": "multicoil_mri"}
#: measurements drawn for one image size: held-out images have the training size
SIZED_PHYSICS = ("inpainting", "compressed_sensing", "singlecoil_mri", "multicoil_mri")
#: measurements of complex images
MRI_PHYSICS = ("singlecoil_mri", "multicoil_mri")


@dataclass(frozen=True)
class Mode:
    """One training run: the prox's backward mode, and whether layers are checkpointed.

    Written ``"<backward>"`` or ``"<backward>+ckpt"``, e.g. ``"implicit+ckpt"``.
    """

    backward: str
    checkpoint_layers: bool = False

    @property
    def name(self) -> str:
        return self.backward + ("+ckpt" if self.checkpoint_layers else "")

    @property
    def description(self) -> str:
        what = {
            "unroll": "backprop through every CG iteration",
            "implicit": "implicit backward (one extra CG solve)",
            "checkpoint": "prox re-solved under autograd in backward",
        }[self.backward]
        return what + (", layers recomputed in backward" if self.checkpoint_layers else "")


def parse_modes(text: str | tuple[str, ...] | list[str]) -> tuple[Mode, ...]:
    """``"unroll,implicit,implicit+ckpt"`` (or a sequence of such names) -> modes."""
    names = text.split(",") if isinstance(text, str) else list(text)
    modes = []
    for raw in names:
        name = str(raw).strip()
        backward, plus, suffix = name.partition("+")
        if backward not in BACKWARD_MODES or (plus and suffix != "ckpt"):
            allowed = ", ".join(f"{b}[+ckpt]" for b in BACKWARD_MODES)
            raise ValueError(f"modes: expected names among {allowed}, got {name!r}")
        modes.append(Mode(backward, bool(plus)))
    if not modes:
        raise ValueError("modes: expected at least one mode, got none")
    if len({m.name for m in modes}) != len(modes):
        raise ValueError(f"modes: expected distinct modes, got {[m.name for m in modes]}")
    return tuple(modes)


def samples_available() -> bool:
    """Whether scikit-image (and so its bundled sample images) is installed."""
    return importlib.util.find_spec("skimage") is not None


def parse_data(text: str) -> str:
    """Check a ``--data`` value: ``auto``, ``samples``, ``deadleaves``, ``bsds`` or
    ``folder:PATH``; return it unchanged."""
    if text in ("auto", "samples", "deadleaves", "bsds"):
        return text
    if text.startswith("folder:") and len(text) > len("folder:"):
        return text
    raise ValueError(
        f"data: expected one of samples, deadleaves, bsds, folder:PATH or auto, got {text!r}"
    )


def _positive_int(name: str, value) -> None:
    check_int(name, value, minimum=1)


def _positive_float(name: str, value, *, allow_zero: bool = False) -> None:
    if allow_zero:
        check_real(name, value, minimum=0.0)
    else:
        check_real(name, value, positive=True)


@dataclass(frozen=True)
class DemoConfig:
    """Everything one demo run depends on. ``None`` sizes take the device's default
    (CPU: 32x32 crops, 64 images, 16 held out, batch 8; CUDA: 64x64, 480, 64, 32).

    Held-out images: ``num_eval`` crops of ``eval_size`` (blur, downsampling: 128; others:
    the training size) from photographs never trained on. With ``pretrained``, the models
    saved per mode start from the weights the package ships for this configuration (when
    there are such), whose step sizes and denoiser levels are fine-tuned (the denoiser
    fixed) for ``finetune_steps`` steps on ``finetune_size`` crops at ``finetune_lr``; the
    comparison of the backward modes always trains from scratch.

    Physics (white noise of std ``noise`` on every measurement): ``"blur"``, Gaussian blur
    of std ``blur_sigma`` pixels, valid padding; ``"inpainting"``, a random mask keeping a
    fraction ``keep`` of the pixels; ``"downsampling"``, Gaussian anti-aliasing and
    decimation by ``factor``, valid padding; ``"compressed_sensing"``, ``ratio`` Gaussian
    measurements per unknown; ``"singlecoil_mri"`` / ``"multicoil_mri"`` (alias ``"mri"``),
    Cartesian MRI with a mask of ``acceleration``-fold undersampling (multi-coil: ``coils``
    smooth coil maps), complex images. Inpainting, compressed sensing and MRI are drawn for
    the training size, so their held-out images have that size.
    Model: unfolded HQS with ``layers`` layers, a shared DnCNN (``depth`` convolutions,
    ``features`` channels), trainable per-layer ``stepsize`` and ``sigma`` (initial values
    given), Adam at ``lr``; CG with ``max_iter`` and ``tol`` in every data step. Evaluated,
    each denoiser call is averaged over ``ensemble`` (``"rotations"``: the four quarter turns
    of its input; ``"dihedral"``: and their mirror images; ``"none"``); training is not.
    """

    physics: str = "blur"
    device: str = "auto"
    img_size: int | None = None
    num_images: int | None = None
    num_eval: int | None = None
    batch_size: int | None = None
    epochs: int = DEFAULT_EPOCHS
    max_iter: int = 100
    tol: float = 1e-8
    data: str = "auto"
    out: str = "demo-output"
    seed: int = 0
    layers: int = 5
    depth: int = 7
    features: int = 32
    modes: tuple[Mode, ...] = field(default_factory=lambda: parse_modes(DEFAULT_MODES))
    lr: float = 5e-4
    stepsize: float = 1.0
    sigma: float = 0.1
    ensemble: str = "rotations"
    blur_sigma: float = 2.5
    noise: float = 0.1
    acceleration: int = 4
    coils: int = 8
    rss: bool = False
    rss_steps: int = 2
    threads: int | None = None
    progress: bool = True
    eval_size: int | None = None
    pretrained: bool = True
    finetune_steps: int = 40
    finetune_size: int = 64
    finetune_lr: float = 2e-3
    keep: float = 0.5
    factor: int = 2
    ratio: float = 0.5

    def __post_init__(self):
        names = PHYSICS + tuple(PHYSICS_ALIASES)
        if self.physics not in names:
            raise ValueError(f"physics: expected one of {names}, got {self.physics!r}")
        # An alias is stored as the name it stands for: reports and files show one name.
        object.__setattr__(self, "physics", PHYSICS_ALIASES.get(self.physics, self.physics))
        for name in ("img_size", "num_images", "num_eval", "batch_size", "threads", "eval_size"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        for name in ("epochs", "max_iter", "layers", "coils", "rss_steps", "features"):
            _positive_int(name, getattr(self, name))
        for name in ("finetune_steps", "finetune_size", "factor"):
            _positive_int(name, getattr(self, name))
        check_bool("pretrained", self.pretrained)
        check_int("depth", self.depth, minimum=2)
        check_int("seed", self.seed, minimum=0)
        check_int("acceleration", self.acceleration, minimum=1)
        for name in ("lr", "stepsize", "sigma", "blur_sigma", "finetune_lr"):
            _positive_float(name, getattr(self, name))
        for name in ("tol", "noise"):
            _positive_float(name, getattr(self, name), allow_zero=True)
        for name in ("keep", "ratio"):
            _positive_float(name, getattr(self, name))
            if getattr(self, name) > 1:
                raise ValueError(
                    f"{name}: expected a number in (0, 1], got {getattr(self, name)!r}"
                )
        check_choice("ensemble", self.ensemble, ENSEMBLE_SETTINGS)
        parse_data(self.data)
        if not (isinstance(self.modes, tuple) and all(isinstance(m, Mode) for m in self.modes)):
            raise ValueError(f"modes: expected a tuple of Mode, got {self.modes!r}")
        if not self.modes:
            raise ValueError("modes: expected at least one mode, got none")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(
                    f"device: expected 'auto' or a torch device, got {self.device!r}"
                ) from err

    # -- resolved values ------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved(self) -> DemoConfig:
        """A copy with ``device``, ``data`` and the sizes made explicit."""
        device = self.torch_device
        size, images, held_out, batch = CUDA_SIZES if device.type == "cuda" else CPU_SIZES
        data = self.data
        if data == "auto":
            data = "samples" if samples_available() else "deadleaves"
        values = asdict(self)
        img_size = self.img_size or size
        values.update(
            device=str(device),
            data=data,
            img_size=img_size,
            num_images=self.num_images or images,
            num_eval=self.num_eval or held_out,
            # A mask or a matrix drawn for one image size: held-out images of that size.
            eval_size=self.eval_size or (img_size if self.physics in SIZED_PHYSICS else EVAL_SIZE),
            batch_size=self.batch_size or batch,
            # One intra-op thread on CPU unless asked: the demo's tensors are small (a batch
            # of 8 32x32 images), so extra threads mostly wait on each other, and on a busy
            # 2-core machine they made a step several times slower.
            threads=self.threads or (1 if device.type == "cpu" else None),
            modes=self.modes,
        )
        return DemoConfig(**values)

    @property
    def reference(self) -> Mode:
        """The run the others are compared with: ``unroll`` if present, else the first."""
        for mode in self.modes:
            if mode.name == "unroll":
                return mode
        return self.modes[0]

    def to_dict(self) -> dict:
        """Plain types only (for JSON and for a spawned child process)."""
        values = asdict(self)
        values["modes"] = [m.name for m in self.modes]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DemoConfig:
        values = dict(values)
        values["modes"] = parse_modes(values["modes"])
        return cls(**values)

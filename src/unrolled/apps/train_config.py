"""The configuration of ``unrolled train``: a schema with defaults, file reading (TOML,
JSON, YAML) and validation whose errors name the key and what it accepts.

A configuration is a dict of sections (``physics``, ``model``, ``solver``, ``data``,
``train``) plus a few top-level keys; :data:`SCHEMA` lists every key, its default and
the values it accepts. TOML is read with ``tomllib`` (Python >= 3.11) or the ``tomli``
package (Python 3.10: ``pip install tomli``); JSON always works; YAML needs PyYAML.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "ConfigError",
    "Key",
    "default_config",
    "load_config_file",
    "parse_value",
    "set_key",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration value, key or file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, a check, and a description of what it accepts."""

    default: Any
    expected: str
    check: Callable[[Any], bool]
    choices: tuple | None = None
    help: str = ""


def _int(low: int, *, none: bool = False) -> Callable[[Any], bool]:
    return lambda v: (
        (none and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= low)
    )


def _number(low: float, *, strict: bool, none: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if none and v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return v > low if strict else v >= low

    return check


def choice(default: Any, values: tuple, help: str = "") -> Key:
    """A key that accepts one of ``values``."""
    # Same type too: True == 1 in Python, but true is not a channel count.
    return Key(
        default,
        f"one of {values}",
        lambda v: any(type(v) is type(c) and v == c for c in values),
        values,
        help,
    )


def _bool(default: bool, help: str = "") -> Key:
    return Key(default, "true or false", lambda v: isinstance(v, bool), (True, False), help)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


SCALAR_NAMES = ("stepsize", "sigma", "beta", "relaxation")
#: the measurements ``physics.operator`` names
OPERATORS = ("blur", "inpainting", "downsampling", "compressed_sensing", "mri", "multicoil_mri")
#: the largest seed: torch's generators take 64-bit seeds, and derived seeds add to it
MAX_SEED = 2**63 - 1

SCHEMA: dict[str, dict[str, Key] | Key] = {
    "seed": Key(
        0,
        "an integer in [0, 2**63 - 1]",
        lambda v: _int(0)(v) and v <= MAX_SEED,
        help="the one seed of the run",
    ),
    "device": Key(
        "auto",
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
        lambda v: (
            isinstance(v, str)
            and (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()))
        ),
        help="'auto': the process's GPU if CUDA is available, else CPU",
    ),
    "out": Key("runs/unrolled", "a folder path (string)", lambda v: isinstance(v, str) and v != ""),
    "nproc": Key(1, "an integer >= 1", _int(1), help="processes (DDP) started on this machine"),
    "physics": {
        "operator": choice(
            "blur",
            OPERATORS,
            "mri and multicoil_mri measure complex images (grey level times a smooth phase)",
        ),
        "kernel_sigma": Key(1.6, "a number > 0", _number(0, strict=True), help="blur"),
        "kernel_size": Key(
            None,
            "an integer >= 1, or none (2 * ceil(3 sigma) + 1)",
            _int(1, none=True),
            help="blur",
        ),
        "padding": choice(
            "valid", ("valid", "circular", "reflect", "replicate", "zeros"), "blur, downsampling"
        ),
        "keep": Key(
            0.5,
            "a number in (0, 1]",
            lambda v: _number(0, strict=True)(v) and v <= 1,
            help="inpainting: the fraction of pixels kept",
        ),
        "factor": Key(2, "an integer >= 1", _int(1), help="downsampling: the decimation factor"),
        "ratio": Key(
            0.5,
            "a number in (0, 1]",
            lambda v: _number(0, strict=True)(v) and v <= 1,
            help="compressed_sensing: measurements per unknown",
        ),
        "acceleration": Key(4, "an integer >= 1", _int(1), help="mri, multicoil_mri"),
        "coils": Key(4, "an integer >= 1", _int(1), help="multicoil_mri"),
        "noise": choice("gaussian", ("gaussian", "none")),
        "noise_sigma": Key(0.05, "a number >= 0", _number(0, strict=False)),
    },
    "model": {
        "algorithm": choice("hqs", ("hqs", "admm", "pgd", "drs")),
        "layers": Key(5, "an integer >= 1", _int(1)),
        "denoiser": choice("dncnn", ("dncnn", "unet")),
        "depth": Key(7, "an integer >= 2 (DnCNN convolutions)", _int(2)),
        "features": Key(32, "an integer >= 1 (DnCNN features, UNet base width)", _int(1)),
        "levels": Key(2, "an integer >= 1 (UNet levels)", _int(1)),
        "share_denoiser": _bool(True, "one denoiser for all layers"),
        "stepsize": Key(1.0, "a number > 0", _number(0, strict=True)),
        "sigma": Key(0.05, "a number > 0", _number(0, strict=True)),
        "trainable": Key(
            ["stepsize", "sigma"],
            f"a list of scalar names among {SCALAR_NAMES} that the algorithm has",
            lambda v: _str_list(v) and all(s in SCALAR_NAMES for s in v),
            SCALAR_NAMES,
        ),
        "share_parameters": _bool(False, "one value of each scalar for all layers"),
        "checkpoint_layers": _bool(False, "recompute each layer in backward"),
        "init": choice(
            "auto",
            ("auto", "adjoint", "normalized_adjoint"),
            "the initial estimate: 'auto' is A^T y / A^T 1 for blur, A^H y otherwise",
        ),
    },
    "solver": {
        "max_iter": Key(30, "an integer >= 1", _int(1)),
        "tol": Key(1e-6, "a number >= 0", _number(0, strict=False)),
        "backward": choice("implicit", ("implicit", "unroll", "checkpoint")),
        "preconditioner": choice("none", ("none", "auto")),
        "on_failure": choice(
            "warn",
            ("warn", "raise", "ignore"),
            "solves stopped at max_iter: 'warn' prints their count once per epoch, 'raise' "
            "stops the run at the first; the log's cg_unconverged column counts them anyway",
        ),
    },
    "data": {
        "source": choice(
            "deadleaves",
            ("deadleaves", "samples", "mixed", "folder"),
            "mixed: scikit-image's training photographs and dead leaves, alternating",
        ),
        "path": Key(
            None,
            "a folder of images (string), for source = 'folder'",
            lambda v: v is None or (isinstance(v, str) and v != ""),
        ),
        "eval_path": Key(
            None,
            "a folder of evaluation images (string; default: path, centre crops)",
            lambda v: v is None or (isinstance(v, str) and v != ""),
        ),
        "size": Key(32, "an integer >= 8 (square crops)", _int(8)),
        "channels": choice(1, (1, 3)),
        "train_images": Key(64, "an integer >= 1", _int(1)),
        "eval_images": Key(8, "an integer >= 0 (0: no evaluation)", _int(0)),
        "num_workers": Key(0, "an integer >= 0", _int(0)),
        "skip_bad_images": _bool(
            False, "leave out unreadable or too small image files (listed in a warning)"
        ),
    },
    "train": {
        "epochs": Key(2, "an integer >= 1", _int(1)),
        "batch_size": Key(8, "an integer >= 1 (per process)", _int(1)),
        "lr": Key(5e-4, "a number > 0", _number(0, strict=True)),
        "pretrain_steps": Key(
            0,
            "an integer >= 0",
            _int(0),
            help="steps of Gaussian denoising (levels up to 2 x the noise) before unrolling",
        ),
        "pretrain_lr": Key(1e-3, "a number > 0", _number(0, strict=True)),
        "schedule": choice(
            "constant", ("constant", "cosine"), "cosine: the learning rate decays to 0 at the end"
        ),
        "dtype": choice("float32", ("float32", "float64")),
        "checkpoint_every": Key(
            "epoch",
            "'epoch' or an integer >= 1 (steps)",
            lambda v: v == "epoch" or _int(1)(v),
        ),
        "keep_last": Key(1, "an integer >= 0", _int(0)),
        "log_every": Key(1, "an integer >= 1", _int(1)),
        "eval_every": Key(1, "an integer >= 1 (epochs)", _int(1)),
        "max_steps": Key(None, "an integer >= 1, or none", _int(1, none=True)),
        "grad_clip": Key(None, "a number > 0, or none", _number(0, strict=True, none=True)),
        "nonfinite": choice("raise", ("raise", "skip")),
        "progress": _bool(True, "tqdm progress bar"),
        "plots": _bool(True, "loss.png and reconstructions.png at the end"),
    },
}

#: keys that may differ between a run and its ``--resume`` (they do not change the
#: steps already taken)
RESUME_MAY_CHANGE = {
    "train.epochs",
    "train.max_steps",
    "train.progress",
    "train.plots",
    "train.log_every",
    "train.eval_every",
    "train.keep_last",
    "train.checkpoint_every",
    "solver.on_failure",
    "data.num_workers",
    "device",
    "out",
}


def default_config() -> dict:
    """A fresh configuration holding every default."""
    config: dict[str, Any] = {}
    for name, entry in SCHEMA.items():
        if isinstance(entry, Key):
            config[name] = copy.deepcopy(entry.default)
        else:
            config[name] = {k: copy.deepcopy(v.default) for k, v in entry.items()}
    return config


def _suggest(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key(dotted: str) -> Key:
    section, _, name = dotted.rpartition(".")
    if not section:
        entry = SCHEMA.get(name)
        if not isinstance(entry, Key):
            top = [k for k, v in SCHEMA.items() if isinstance(v, Key)]
            raise ConfigError(
                f"config: unknown key {dotted!r}{_suggest(name, [*top, *sections()])}; "
                f"allowed top-level keys: {top}, sections: {sections()}"
            )
        return entry
    keys = SCHEMA.get(section)
    if not isinstance(keys, dict):
        raise ConfigError(
            f"config: unknown section [{section}]{_suggest(section, sections())}; "
            f"allowed sections: {sections()}"
        )
    if name not in keys:
        raise ConfigError(
            f"config: unknown key {dotted!r}{_suggest(name, keys)}; "
            f"allowed keys in [{section}]: {list(keys)}"
        )
    return keys[name]


def sections() -> list[str]:
    return [k for k, v in SCHEMA.items() if isinstance(v, dict)]


def check_value(dotted: str, value: Any) -> Any:
    """``value`` if ``dotted`` accepts it, else :class:`ConfigError` naming both."""
    key = _key(dotted)
    if not key.check(value):
        raise ConfigError(f"{dotted}: expected {key.expected}, got {value!r}")
    return value


def set_key(config: dict, dotted: str, value: Any) -> None:
    """``config[section][key] = value`` after checking ``value`` (see :func:`check_value`)."""
    value = check_value(dotted, value)
    section, _, name = dotted.rpartition(".")
    if section:
        config.setdefault(section, {})[name] = value
    else:
        config[name] = value


def parse_value(text: str) -> Any:
    """A value written on the command line: TOML/JSON literals (``3``, ``1e-3``,
    ``true``, ``["a", "b"]``), ``none``/``null`` for None, anything else a string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def merge(config: dict, overrides: Mapping, *, where: str = "config") -> dict:
    """Check every key of ``overrides`` (nested like ``config``) and copy it into ``config``."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{where}: expected a table of sections and keys, got {type(overrides).__name__}"
        )
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}: keys must be strings, got {name!r}")
        entry = SCHEMA.get(name)
        if entry is None and isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: unknown section [{name}]{_suggest(name, sections())}; "
                f"allowed sections: {sections()}"
            )
        if isinstance(entry, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{where}: [{name}] must be a table of keys {list(entry)}, got {value!r}"
                )
            items = [(f"{name}.{key}", item) for key, item in value.items()]
        else:
            items = [(name, value)]
        for dotted, item in items:
            try:
                set_key(config, dotted, item)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
    return config


def validate_config(config: dict) -> dict:
    """Checks that involve several keys; returns ``config``."""
    model, data = config["model"], config["data"]
    from ..unfolded import ALGORITHMS

    own = tuple(spec.name for spec in ALGORITHMS[model["algorithm"]].SCALARS)
    for name in model["trainable"]:
        if name not in own:
            raise ConfigError(
                f"model.trainable: {model['algorithm']!r} has the scalars {own}, got {name!r}"
            )
    if data["source"] == "folder" and data["path"] is None:
        raise ConfigError("data.path: expected a folder of images with source = 'folder', got none")
    if data["source"] != "folder" and (data["path"] or data["eval_path"]):
        raise ConfigError(
            f"data.path: only used with source = 'folder', got source = {data['source']!r}"
        )
    physics = config["physics"]
    if physics["operator"] == "blur":
        kernel = physics["kernel_size"] or (2 * math.ceil(3 * physics["kernel_sigma"]) + 1)
        if physics["padding"] == "valid" and kernel >= data["size"]:
            raise ConfigError(
                f"data.size: expected more than the kernel size {kernel} with padding 'valid', "
                f"got {data['size']}"
            )
    if physics["operator"] == "downsampling" and data["size"] % physics["factor"]:
        raise ConfigError(
            f"data.size: expected a multiple of physics.factor = {physics['factor']}, "
            f"got {data['size']}"
        )
    if physics["operator"] in ("mri", "multicoil_mri") and config["train"]["pretrain_steps"]:
        raise ConfigError(
            "train.pretrain_steps: expected 0 for complex images (MRI), got "
            f"{config['train']['pretrain_steps']}"
        )
    return config


def load_config_file(path: str | os.PathLike) -> dict:
    """The raw table in a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            return _toml().loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as err:
                raise ConfigError(
                    f"config file {path}: YAML needs the PyYAML package (pip install pyyaml); "
                    "or write the config as TOML or JSON"
                ) from err
            loaded = yaml.safe_load(text)
            return {} if loaded is None else loaded
    except ConfigError:
        raise
    except Exception as err:  # each parser has its own error type
        raise ConfigError(f"config file {path}: cannot be parsed: {err}") from err
    raise ConfigError(
        f"config file {path}: expected a .toml, .json, .yaml or .yml file, got {suffix!r}"
    )


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as err:
            raise ConfigError(
                "TOML config files need Python >= 3.11 or the tomli package on Python 3.10 "
                "(pip install tomli); a .json config works everywhere"
            ) from err
    return tomllib


def dump_toml(config: dict) -> str:
    """The configuration written as TOML (for ``--print-config`` and the run folder)."""
    lines = []

    def line(name: str, value: Any) -> str:
        # TOML has no null: a None (the default "none") is written as a comment.
        return f"# {name} = none" if value is None else f"{name} = {json.dumps(value)}"

    lines.extend(line(k, v) for k, v in config.items() if not isinstance(v, dict))
    for name, value in config.items():
        if isinstance(value, dict):
            lines.append(f"\n[{name}]")
            lines.extend(line(k, v) for k, v in value.items())
    return "\n".join(lines) + "\n"

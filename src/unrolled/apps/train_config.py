"""The configuration of ``unrolled train``: file reading (TOML, JSON, YAML), flags and
validation whose errors name the key and what it accepts.

A configuration is a dict of sections (``physics``, ``model``, ``solver``, ``data``,
``train``) plus a few top-level keys; :data:`~unrolled.apps.train_schema.SCHEMA` lists
every key, its default and the values it accepts. TOML is read with ``tomllib`` (Python
>= 3.11) or the ``tomli`` package (Python 3.10: ``pip install tomli``); JSON always
works; YAML needs PyYAML.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..physics.initial import check_initial_estimate
from ..unfolded import ALGORITHMS
from .train_schema import RESUME_MAY_CHANGE, SCHEMA, ConfigError, Key, default_config

__all__ = [
    "RESUME_MAY_CHANGE",
    "SCHEMA",
    "ConfigError",
    "Key",
    "default_config",
    "dump_toml",
    "load_config_file",
    "merge",
    "parse_value",
    "set_key",
    "validate_config",
]


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
    own = tuple(spec.name for spec in ALGORITHMS[model["algorithm"]].SCALARS)
    for name in model["trainable"]:
        if name not in own:
            raise ConfigError(
                f"model.trainable: {model['algorithm']!r} has the scalars {own}, got {name!r}"
            )
    try:  # the weight goes with init = "smooth" only, as for the unfolded models
        check_initial_estimate(
            model["init"], model["init_weight"], names=("model.init", "model.init_weight")
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
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

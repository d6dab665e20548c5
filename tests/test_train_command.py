"""``unrolled train``: config files (TOML, JSON, YAML), flags, errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import unrolled as ur
from unrolled import cli
from unrolled.apps.train import build_experiment, resolve_config
from unrolled.apps.train_config import (
    SCHEMA,
    ConfigError,
    default_config,
    dump_toml,
    load_config_file,
    merge,
    validate_config,
)
from unrolled.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--layers", "1", "--depth", "2", "--features", "4", "--img-size", "12",
    "--num-images", "4", "--eval-images", "2", "--batch-size", "2", "--epochs", "1",
    "--max-iter", "3", "--blur-sigma", "1.0", "--set", "train.progress=false",
    "--set", "train.plots=false",
]  # fmt: skip


def config_of(*argv: str) -> dict:
    return resolve_config(cli.build_parser().parse_args(["train", *argv]))


def test_train_from_flags_prints_where_it_writes(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(out), "--algorithm", "admm"]) == 0
    printed = capsys.readouterr().out
    assert f"writing in {out.resolve()}" in printed and "done: 2 steps" in printed
    state = load_checkpoint(out / "latest.pt")
    assert state["step"] == 2
    saved = load_config_file(out / "config.toml")
    assert saved["model"]["algorithm"] == "admm" and saved["data"]["size"] == 12
    # --resume with more epochs continues the same run.
    assert cli.main(["train", *TINY, "--out", str(out), "--algorithm", "admm", "--epochs", "2",
                     "--resume"]) == 0  # fmt: skip
    assert load_checkpoint(out / "latest.pt")["step"] == 4
    assert "resuming in" in capsys.readouterr().out


def test_every_example_config_is_valid_and_builds():
    files = sorted((ROOT / "examples" / "configs").glob("*.*"))
    assert files, "no example configs"
    for path in files:
        config = config_of("--config", str(path))
        parts = build_experiment({**config, "data": {**config["data"], "train_images": 2}})
        assert isinstance(parts["model"], torch.nn.Module), path


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
def test_config_file_formats_and_precedence(tmp_path, suffix):
    table = {"seed": 5, "model": {"algorithm": "pgd", "layers": 3}, "solver": {"tol": 1e-4}}
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text('seed = 5\n[model]\nalgorithm = "pgd"\nlayers = 3\n[solver]\ntol = 1e-4\n')
    elif suffix == ".json":
        path.write_text(json.dumps(table))
    else:
        pytest.importorskip("yaml")
        path.write_text("seed: 5\nmodel:\n  algorithm: pgd\n  layers: 3\nsolver:\n  tol: 1.0e-4\n")
    config = config_of("--config", str(path), "--layers", "4", "--set", "solver.max_iter=9")
    assert config["seed"] == 5 and config["model"]["algorithm"] == "pgd"
    assert config["model"]["layers"] == 4  # the flag wins over the file
    assert config["solver"] == {**default_config()["solver"], "tol": 1e-4, "max_iter": 9}


def test_print_config_round_trips(tmp_path, capsys):
    assert cli.main(["train", "--print-config", "--padding", "circular", "--lr", "1e-3"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "dumped.toml"
    path.write_text(text)
    again = merge(default_config(), load_config_file(path))
    assert again == config_of("--padding", "circular", "--lr", "1e-3")
    assert dump_toml(again) == text


BAD = [
    (["--padding", "mirror"], "physics.padding: expected one of ('valid', 'circular'"),
    (["--algorithm", "fista"], "model.algorithm: expected one of ('hqs', 'admm', 'pgd', 'drs')"),
    (["--backward", "adjoint"], "solver.backward: expected one of ('implicit', 'unroll'"),
    (["--layers", "0"], "model.layers: expected an integer >= 1, got 0"),
    (["--layers", "2.5"], "model.layers: expected an integer >= 1, got 2.5"),
    (["--lr", "-1"], "train.lr: expected a number > 0, got -1"),
    (["--lr", "nan"], "train.lr: expected a number > 0, got 'nan'"),
    (["--channels", "true"], "data.channels: expected one of (1, 3), got True"),
    (["--trainable", "stepsize,beta"], "model.trainable: 'hqs' has the scalars"),
    (["--set", "solver.maxiter=3"], "unknown key 'solver.maxiter' (did you mean 'max_iter'?)"),
    (["--set", "solvr.max_iter=3"], "unknown section [solvr] (did you mean 'solver'?)"),
    (["--set", "seed"], "--set: expected SECTION.KEY=VALUE, got 'seed'"),
    (["--data", "folder"], "data.path: expected a folder of images"),
    (["--img-size", "8", "--blur-sigma", "2"], "data.size: expected more than the kernel size 13"),
    (["--checkpoint-every", "0"], "train.checkpoint_every: expected 'epoch' or an integer"),
    (["--operator", "radar"], "physics.operator: expected one of ('blur', 'inpainting'"),
    (["--keep", "1.5"], "physics.keep: expected a number in (0, 1], got 1.5"),
    (["--operator", "downsampling", "--factor", "3", "--img-size", "16"],
     "data.size: expected a multiple of physics.factor = 3, got 16"),
    (["--operator", "mri", "--set", "train.pretrain_steps=5"],
     "train.pretrain_steps: expected 0 for complex images (MRI), got 5"),
    (["--set", "model.init=smooth"], "model.init_weight: expected a finite number > 0, got None"),
    (["--set", "model.init_weight=0.5"],
     "model.init_weight: expected None with model.init='auto'"),
]  # fmt: skip


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_name_the_key_and_the_allowed_values(argv, message, capsys):
    with pytest.raises(ConfigError) as err:
        config_of(*argv)
    assert message in str(err.value)
    assert cli.main(["train", *argv]) == 2  # the command reports it, no traceback
    assert message in capsys.readouterr().err


def test_bad_config_files_name_the_key(tmp_path):
    cases = {
        "unknown.toml": ('[physics]\npaddin = "valid"\n', "unknown key 'physics.paddin'"),
        "section.toml": ("[optimiser]\nlr = 1\n", "unknown section [optimiser]"),
        "top.toml": ("sede = 1\n", "unknown key 'sede' (did you mean 'seed'?)"),
        "type.toml": ('[train]\nepochs = "two"\n', "train.epochs: expected an integer >= 1"),
        "table.toml": ("physics = 3\n", "[physics] must be a table of keys"),
        "syntax.toml": ("[physics\n", "cannot be parsed"),
        "list.json": ("[1, 2]", "expected a table of sections and keys, got list"),
        "run.ini": ("[physics]\n", "expected a .toml, .json, .yaml or .yml file"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            config_of("--config", str(path))
        assert message in str(err.value), name
        assert name in str(err.value), name  # the file is named too
    with pytest.raises(ConfigError, match="no such file"):
        load_config_file(tmp_path / "missing.toml")


def test_every_schema_key_has_a_default_that_validates():
    config = validate_config(default_config())
    for section, keys in SCHEMA.items():
        if isinstance(keys, dict):
            for name, key in keys.items():
                assert key.check(config[section][name]), f"{section}.{name}"


def test_help_documents_nproc_torchrun_and_the_keys(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--nproc" in text and "torchrun --standalone --nproc-per-node 2" in text
    assert "--resume" in text and "physics.padding" in text


def test_a_sensing_matrix_too_large_for_memory_is_refused(capsys):
    """Compressed sensing keeps a dense (ratio n) x n matrix: 3 x 2048 x 2048 images would
    need hundreds of terabytes, refused before anything is allocated."""
    argv = ["train", "--operator", "compressed_sensing", "--img-size", "2048", "--channels", "3"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the compressed-sensing matrix needs" in err


def test_pretraining_source_and_a_fixed_denoiser(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train", *TINY, "--out", str(out), "--channels", "3",
        "--set", "data.source=samples", "--set", "data.pretrain_source=deadleaves",
        "--set", "data.pretrain_size=16", "--set", "train.pretrain_steps=2",
        "--set", "train.freeze_denoiser=true", "--set", "train.scalar_lr=0.05",
        "--set", "model.trainable=stepsize,sigma",
    ]  # fmt: skip
    config = config_of(*argv[1:])
    parts = build_experiment(config)
    pretrain_batch = next(iter(parts["pretrain_data"]))
    assert tuple(pretrain_batch.shape[-2:]) == (16, 16)  # not the training crops' 12
    assert tuple(next(iter(parts["train_data"])).shape[-2:]) == (12, 12)
    assert cli.main(argv) == 0
    assert "training the per-layer scalars only" in capsys.readouterr().out
    state = load_checkpoint(out / "latest.pt")
    # the unrolled stage's optimiser holds the two scalar tensors and nothing else
    optimizer = state["optimizer"]
    assert [g["lr"] for g in optimizer["param_groups"]] == [0.05]
    assert len(optimizer["param_groups"][0]["params"]) == 2  # log_stepsize, log_sigma


def test_the_ensemble_setting_reaches_the_saved_model(tmp_path):
    assert build_experiment(config_of(*TINY))["model"].ensemble is None  # "none"
    out = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(out), "--set", "model.ensemble=rotations"]
    assert build_experiment(config_of(*argv[1:]))["model"].ensemble == "rotations"
    assert cli.main(argv) == 0
    assert ur.load(out / "last.pt").ensemble == "rotations"
    with pytest.raises(ValueError, match="model.ensemble"):
        config_of(*TINY, "--set", "model.ensemble=flips")

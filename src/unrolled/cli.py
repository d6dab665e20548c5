"""Command line: ``unrolled demo | train | eval``.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, so the commands stay independent.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import _startup

# sub-command -> (module, one-line help)
COMMANDS = {
    "demo": (
        "unrolled.apps.demo",
        "train the seed unfolded network with full backprop and implicit backward, side by side",
    ),
    "train": ("unrolled.apps.train", "train an unfolded network from a config file or flags"),
    "eval": (
        "unrolled.apps.evaluate",
        "score a trained model on a folder of images against classical baselines",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unrolled", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command whose module is not part of this build
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    _startup.uninstall()  # from here on each command handles SIGINT itself
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

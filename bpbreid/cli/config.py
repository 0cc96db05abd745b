"""``python -m bpbreid config``: print a configuration after overrides.

Examples::

    python -m bpbreid config synthetic_cpu model.bpbreid.masks.parts_num=8
    python -m bpbreid config --diff train.lr=1e-3     # only what differs from the defaults
    python -m bpbreid config --list                   # the bundled configs

The configuration is this command's subject, so it is a positional argument here; every
other command takes it as ``--config``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="bundled config name or YAML path (default: defaults)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-3"
    )
    parser.add_argument(
        "--diff", action="store_true", help="print only keys that differ from defaults"
    )
    parser.add_argument("--list", action="store_true", help="list the bundled configs")


def run(args: argparse.Namespace) -> int:
    import yaml

    from bpbreid.config import CONFIGS_DIR, config_diff, config_to_dict, load_config

    if args.list:
        for path in sorted(CONFIGS_DIR.glob("*.yaml")):
            print(path.stem)
        return 0
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config:  # no config given, only overrides
        overrides.insert(0, config)
        config = None
    cfg = load_config(config, overrides)
    if args.diff:
        for key, (default, value) in config_diff(cfg).items():
            print(f"{key}: {default!r} -> {value!r}")
    else:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0

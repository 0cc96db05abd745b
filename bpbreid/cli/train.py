"""``python -m bpbreid train``: train a model from a config.

Examples::

    python -m bpbreid train --config synthetic_cpu
    python -m bpbreid train --config market1501_hrnet_w32 train.max_epoch=60 data.root=/data
    python -m bpbreid train --config synthetic_cpu --resume          # continue a killed run
    torchrun --nproc_per_node=4 -m bpbreid train --config market1501_hrnet_w32   # DDP
"""

from __future__ import annotations

import argparse

from bpbreid.cli import common

EPILOG = """\
overrides are dotted key=value pairs in YAML syntax, e.g. train.lr=1e-3
model.bpbreid.masks.parts_num=8 "train.loggers=[console,csv,tensorboard]".
Bundled configs: python -m bpbreid config --list. Outputs (config.yaml, last.pth,
model.pth, metrics.csv, steps.csv) go to train.output_dir (--out). Several GPUs: launch with
torchrun --nproc_per_node=N -m bpbreid train ... (each process draws its own P x K batch).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    common.add_config(
        parser,
        required=True,
        help="a YAML file or the name of a bundled config (e.g. synthetic_cpu, "
        "market1501_hrnet_w32)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run from <output_dir>/last.pth (same config)",
    )
    common.add_out(
        parser,
        help="folder of the run (train.output_dir)",
        aliases=("--output-dir", "-o"),
    )
    common.add_device(
        parser,
        help="sets train.device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N "
        "(default: the config's train.device, auto in every bundled config)",
    )
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    # --out and --device are overrides of their own: the config checks them with the rest.
    extra = []
    if args.out:
        extra.append(f"train.output_dir={args.out}")
    if args.device:
        extra.append(f"train.device={args.device}")
    # Settings that cannot work are refused here, before torch is even imported.
    cfg = common.config_from_args(args, required=True, extra=extra)

    from bpbreid.engine.distributed import cleanup, env_dist_info
    from bpbreid.engine.trainer import Trainer
    from bpbreid.model import validate_model_config

    # The model's own checks (e.g. part_mode=global with part test embeddings) would
    # otherwise run only once the dataset is generated and loaded.
    validate_model_config(cfg)
    main = env_dist_info().is_main
    try:
        trainer = Trainer(cfg, progress=common.progress_from_args(args))
        if main:
            print(
                f"Training '{cfg.name}': {cfg.model.backbone} on {cfg.data.name}, "
                f"{trainer.num_classes} identities, {trainer.steps_per_epoch} steps/epoch, "
                f"device {trainer.device}, AMP {trainer.amp.name}, output {trainer.output_dir}"
            )
        state = trainer.fit(resume=args.resume)
        if main:
            if trainer.test_result is not None:
                print(trainer.test_result.summary())
            if state.best_epoch is not None:
                print(f"Model selected on the validation split: epoch {state.best_epoch}.")
            print(f"Saved: {trainer.output_dir / 'model.pth'} (and last.pth, metrics.csv)")
    finally:
        cleanup()
    return 0

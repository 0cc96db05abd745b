"""The command layer: ``python -m bpbreid <command>``, one module per command.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and imports what is heavy
(torch, datasets, the engine) inside ``run``, so ``--help`` answers at once. The flags that
several commands share, the checks that run before anything heavy and the one checkpoint
loader live in :mod:`bpbreid.cli.common`. The command table is in :mod:`bpbreid.__main__`.

The library never imports this package: everything a command does is a library call that
a notebook or a test can make too.
"""

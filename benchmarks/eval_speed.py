"""Evaluation speed benchmark (same as ``python -m bpbreid bench eval``).

Usage: ``python benchmarks/eval_speed.py [--small] [--device cuda] [--threads 2]``.
"""

import argparse
import sys

from bpbreid.bench import eval as eval_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=eval_bench.__doc__.strip().splitlines()[0])
    eval_bench.add_arguments(parser)
    sys.exit(eval_bench.run(parser.parse_args()))

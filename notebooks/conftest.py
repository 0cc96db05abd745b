"""Notebook tests run in FAST mode (each notebook <= 90 s), whoever starts pytest."""

import os

os.environ.setdefault("BPBREID_MODE", "FAST")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

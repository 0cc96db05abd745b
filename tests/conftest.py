"""Shared test settings: CPU only, one thread, FAST mode, nothing downloaded."""

from __future__ import annotations

import os

# Set before torch is imported by any test module: one intra-op thread keeps the 2-core
# test machine responsive, and FAST mode keeps anything notebook-like small.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BPBREID_MODE", "FAST")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield

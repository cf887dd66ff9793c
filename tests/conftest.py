"""Test-wide settings: one thread (the machine is shared), deterministic seeds, and an empty cost-model cache
(exports plan with the built-in defaults, whatever this machine has calibrated)."""

import os
import tempfile

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["FX_UPSCALE_CACHE"] = tempfile.mkdtemp(prefix="fx_upscale_cache_")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

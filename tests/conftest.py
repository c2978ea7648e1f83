"""Shared test settings: the devices to run device-dependent tests on (CUDA only where present)."""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The suite's models are tiny: one thread is faster than two on a 2-core machine, and deterministic.
torch.set_num_threads(1)

"""Shared test settings: the devices to run device-dependent tests on (CUDA only where present)."""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

"""Shared test settings: the devices to run device-dependent tests on (CUDA only where present), one torch
thread, the slowest files first (for pytest-xdist), and nbval's kernel start retried."""

import nbval.kernel
import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The suite's models are tiny: one thread is faster than two on a 2-core machine, and deterministic. Each
# pytest-xdist worker imports this file, so two workers use one core each.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one intra-op thread, whatever an earlier test set (speed measurements set their own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# The files that take the longest (a minute or more on a 2-core machine), slowest first. `make test` hands
# whole files to its workers in collection order (--dist loadfile --no-loadscope-reorder): started first,
# these do not leave one worker running alone at the end. Each file keeps the order of its own tests, and a
# file not named here keeps its place after them; the list only affects the order, never what runs.
SLOWEST_FILES = ("07_permuted_input.ipynb", "04_cifar.ipynb", "test_notebooks.py", "test_real_data.py",
                 "03_two_layer_closed_form.ipynb", "test_train.py", "02_graph_matching.ipynb", "test_sweep.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


# In one of the first five `make test` runs with two workers, a notebook's kernel died on start while the
# other worker was starting one (nbval hides the kernel's stderr; the likely cause: jupyter_client picks a
# kernel's ports before the kernel binds them, so two processes can meet on one). A kernel that failed to
# start is started again, twice at most; what the cells do is checked as before.
_start_new_kernel = nbval.kernel.start_new_kernel
KERNEL_START_TRIES = 3


def _start_new_kernel_with_retries(*args, **kwargs):
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            return _start_new_kernel(*args, **kwargs)
        except RuntimeError:
            if attempt == KERNEL_START_TRIES:
                raise


nbval.kernel.start_new_kernel = _start_new_kernel_with_retries

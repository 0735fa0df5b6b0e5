"""Shared test settings: one thread for torch and for numpy/scipy's math libraries (the models
under test are small, where extra threads only add scheduling overhead, and results do not
depend on the thread count)."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)

"""Fixtures shared by every test package."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny models run many times faster than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

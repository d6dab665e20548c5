"""Test-session settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests use tiny tensors: on a 2-core machine shared with other work, intra-op
    # threads cost far more in synchronisation than they save.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

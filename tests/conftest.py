"""Test-session settings."""

import pytest
import torch
from hypothesis import settings

# Property-based tests draw the same examples on every run (derandomised, no example
# database): a submission must not pass or fail by chance.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.load_profile("deterministic")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests use tiny tensors: on a 2-core machine shared with other work, intra-op
    # threads cost far more in synchronisation than they save.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

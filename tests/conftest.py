"""Session-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run every test on one torch thread: the CPU is shared with other jobs, and a CLI under
    test may have set another count (its ``--threads``) for the tests after it."""
    torch.set_num_threads(1)

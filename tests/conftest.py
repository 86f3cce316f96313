"""Fixtures shared by several test files (opt-in: none is autouse).

``one_thread``: one intra-op torch thread for the test (the models are tiny; on a machine shared by
many jobs extra threads only wait in OpenMP barriers).  A test file opts in with
``pytestmark = pytest.mark.usefixtures("one_thread")``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

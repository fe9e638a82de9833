"""Shared test fixture: one torch thread while a test module runs.

The models in these tests are tiny; with two intra-op threads on a busy 2-core machine,
OpenMP contention makes a step ~50x slower than with one. The previous setting is restored.
Use with ``from helpers_torch import one_torch_thread  # noqa: F401`` (the fixture is autouse).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""pytest-benchmark runs of every workload (dlx and, when installed, PyTorch).

    pytest bench/ --benchmark-enable --benchmark-group-by=param:name

These are measurements, not tests: the suite in tests/ never times anything.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import BATCHES  # noqa: E402
from workloads import all_workloads  # noqa: E402

WORKLOADS = all_workloads()


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_dlx(benchmark, name):
    step = WORKLOADS[name][0](BATCHES.get(name, 64))
    benchmark(step)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_torch(benchmark, name):
    pytest.importorskip("torch")
    step = WORKLOADS[name][1](BATCHES.get(name, 64))
    benchmark(step)

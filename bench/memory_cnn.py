"""Peak memory of one cnn_train step, dlx (NumPy) vs PyTorch CPU, each in its own subprocess.

    python bench/memory_cnn.py

Each child builds the model and data, runs two warm-up steps, then measures
the growth of the peak resident set (ru_maxrss) over one more step plus the
memory the warm state holds (RSS after warm-up minus RSS after import), and
prints both; the ratio compares the peak growth above the imported baseline.
"""

import os
import subprocess
import sys

CHILD = r"""
import os, sys, resource
sys.path.insert(0, {bench!r})
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
import numpy
{imports}
base = rss()
from workloads.cnn import {builder}
step = {builder}(64)
step(); step()
step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{peak - base:.1f}}")
"""


def measure(builder, imports):
    bench = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(bench=bench, builder=builder, imports=imports)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    dlx_mb = measure("dlx_train_step", "import dlx")
    torch_mb = measure("torch_train_step", "import torch")
    print(
        f"peak MiB above imports, one cnn_train step: dlx {dlx_mb:.1f}, torch {torch_mb:.1f}, "
        f"ratio {dlx_mb / torch_mb:.2f}"
    )


if __name__ == "__main__":
    main()

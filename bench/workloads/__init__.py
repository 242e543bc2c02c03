"""Benchmark workloads of ``shared/WORKLOADS.md``.

Each module here defines ``WORKLOADS = {name: (dlx_step, torch_step)}`` where
``dlx_step(batch)`` / ``torch_step(batch)`` build the model and fixed random
data and return a no-argument callable running one step (forward + backward +
Adam update for ``*_train``, forward only for ``*_infer*``).
"""

import importlib
import pkgutil


def all_workloads():
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.update(getattr(module, "WORKLOADS", {}))
    return found


def torch_step_of(model, optimizer, loss_fn, x, y):
    """The PyTorch step every ``*_train`` workload times: zero the gradients, forward, loss,
    backward, optimizer step; returns the loss."""

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step

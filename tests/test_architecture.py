"""The house rules of DESIGN.md: levels import only downwards, and above
``backends/`` nothing imports NumPy or CuPy to compute."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dlx"

# Host-boundary modules: they load data, read/write files or hand arrays back to
# the user, so they may use host NumPy. Nothing else above backends/ may.
HOST_BOUNDARY = {
    "dlx/__init__.py",  # to_numpy() of plain Python data
    "dlx/data/batching.py",
    "dlx/data/datasets.py",
    "dlx/data/mnist.py",
    "dlx/models/saving.py",
    # ONNX export and Keras weight files: built from / read into host NumPy by design
    "dlx/onnx/export.py",
    "dlx/onnx/converters_core.py",
    "dlx/onnx/converters_conv.py",
    "dlx/onnx/converters_recurrent.py",
    "dlx/onnx/converters_attention.py",
    "dlx/interop/keras_h5.py",
}
ARRAY_MODULES = {"numpy", "cupy", "cupyx"}


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_no_numpy_or_cupy_above_backends():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in HOST_BOUNDARY:
            continue
        used = ARRAY_MODULES.intersection(imported_modules(path))
        if used:
            offenders.append(f"{relative} imports {sorted(used)}")
    assert not offenders, "compute with xp = the array's namespace instead:\n" + "\n".join(
        offenders
    )


def test_the_boundary_list_names_only_files_that_need_it():
    # a stale entry would silently allow NumPy into a future file of that name
    stale = [
        p
        for p in sorted(HOST_BOUNDARY)
        if not (ROOT / p).exists() or not ARRAY_MODULES.intersection(imported_modules(ROOT / p))
    ]
    assert not stale, f"host-boundary entries that import no NumPy (remove them): {stale}"


LEVELS = {
    "dlx.backends": 1,
    "dlx.autograd": 2,
    "dlx.config": 2,
    "dlx.ops": 3,
    "dlx.initializers": 4,
    "dlx.regularizers": 4,
    "dlx.layers": 4,
    "dlx.losses": 5,
    "dlx.metrics": 5,
    "dlx.optimizers": 5,
    "dlx.callbacks": 5,
    "dlx.plotting": 5,
    "dlx.io": 5,
    "dlx.models": 6,
    "dlx.distributed": 6,
    "dlx.interop": 6,  # Keras weight files, read and written by Model.load/save_weights
    "dlx.data": 7,
    "dlx.onnx": 8,  # export of whole models
}
# fit() batches host arrays, so the models level (and data-parallel fit, which
# shards them) uses the data level's batching helpers.
ALLOWED_UPWARD = {("dlx.models", "dlx.data"), ("dlx.distributed", "dlx.data")}


def _level_of(module):
    best = None
    for prefix, level in LEVELS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, level)
    return best


def _absolute(path, node):
    package = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    package = (
        package.replace("backends", "dlx.backends", 1)
        if package.startswith("backends")
        else package
    )
    parts = package.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join(base + ([node.module] if node.module else []))


def test_levels_import_only_downwards():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the package root assembles every level
        this = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        own = _level_of(this)
        if own is None:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = _absolute(path, node)
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                for name in names:
                    other = _level_of(name)
                    if other and other[1] > own[1] and (own[0], other[0]) not in ALLOWED_UPWARD:
                        violations.append(
                            f"{this} (level {own[1]}) imports {name} (level {other[1]})"
                        )
    assert not violations, "\n".join(violations)

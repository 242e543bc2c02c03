"""Level 2: reverse-mode automatic differentiation.

A :class:`Tensor` wraps one backend array. Each differentiable operation is a
:class:`Function` whose ``forward`` and ``backward`` sit side by side and work on
plain arrays; calling it on Tensors records the Function as the ``creator`` of
its outputs, so ``loss.backward()`` can walk the graph in reverse topological
order and hand every Function the gradient of its outputs.
"""

import contextlib
import weakref

from . import backends

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad():
    """Inside this block operations record no graph (inference, weight updates)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


@contextlib.contextmanager
def enable_grad():
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, True
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def is_grad_enabled():
    return _GRAD_ENABLED


class Tensor:
    """An array plus what autograd needs: ``requires_grad``, ``grad`` and ``creator``.

    ``value`` is an array of the backend that owns it. Host arrays, lists and
    scalars given to the constructor are moved to the current backend.
    ``grad`` (an array of the same shape) is filled by :meth:`backward` on
    leaves that require it, and accumulates until set back to None.
    """

    __slots__ = (
        "value",
        "requires_grad",
        "grad",
        "creator",
        "name",
        "retains_grad",
        "mask",
        "__weakref__",
    )
    __array_ufunc__ = None  # make numpy defer to Tensor's reflected operators
    __array_priority__ = 1000

    def __init__(self, value, requires_grad=False, name=None, dtype=None):
        self.value = as_backend_array(value, dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.creator = None
        self.name = name
        self.retains_grad = False
        self.mask = None  # a boolean (batch, time) array set by masking layers

    # -- array-like attributes -------------------------------------------
    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        n = 1
        for s in self.value.shape:
            n *= s
        return n

    @property
    def device(self):
        return self.value.device

    @property
    def backend(self):
        return backends.backend_of(self.value)

    @property
    def xp(self):
        return self.backend.xp

    @property
    def is_leaf(self):
        return self.creator is None

    def __len__(self):
        return self.value.shape[0]

    def numpy(self):
        """A host NumPy copy of the value."""
        return self.backend.to_numpy(self.value)

    def item(self):
        return float(self.numpy().reshape(()))

    def __float__(self):
        return self.item()

    def detach(self):
        """The same array without history (shares memory)."""
        return Tensor(self.value)

    def retain_grad(self):
        """Also keep ``grad`` on this non-leaf Tensor after backward."""
        self.retains_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    # -- autograd -------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it.

        ``grad`` defaults to ones (so a non-scalar output means the sum of its
        elements). The graph is freed afterwards unless ``retain_graph``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a Tensor that does not require grad: nothing it "
                "depends on requires grad, or it was computed under no_grad()."
            )
        xp = self.xp
        if grad is None:
            grad = xp.ones(self.value.shape, dtype=self.value.dtype, device=self.value.device)
        elif isinstance(grad, Tensor):
            grad = grad.value
        if tuple(grad.shape) != self.shape:
            raise ValueError(
                f"backward: grad of shape {tuple(grad.shape)} for a Tensor of shape {self.shape}"
            )
        _run_backward(self, grad, retain_graph)

    # -- operators (defined in dlx.ops, bound below) ----------------------
    def __neg__(self):
        return _ops().negative(self)

    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().subtract(other, self)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __rmul__(self, other):
        return _ops().multiply(other, self)

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().divide(other, self)

    def __pow__(self, other):
        return _ops().power(self, other)

    def __rpow__(self, other):
        return _ops().power(other, self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __getitem__(self, key):
        return _ops().getitem(self, key)

    def __abs__(self):
        return _ops().abs(self)

    # comparisons give plain arrays (no gradient flows through them)
    def __lt__(self, other):
        return self.value < _value(other)

    def __le__(self, other):
        return self.value <= _value(other)

    def __gt__(self, other):
        return self.value > _value(other)

    def __ge__(self, other):
        return self.value >= _value(other)

    __hash__ = object.__hash__

    @property
    def T(self):
        return _ops().transpose(self)

    def sum(self, axis=None, keepdims=False):
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _ops().min(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, tuple(shape))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return _ops().transpose(self, tuple(axes) if axes else None)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    def tanh(self):
        return _ops().tanh(self)

    def sigmoid(self):
        return _ops().sigmoid(self)

    def relu(self):
        return _ops().relu(self)


class Variable(Tensor):
    """A trainable Tensor: a layer weight or optimizer target.

    ``requires_grad`` mirrors ``trainable``; ``assign`` replaces the value in
    place of the Variable (not of the array), so graphs already built keep the
    old array.
    """

    __slots__ = ("trainable", "regularizer", "constraint")

    def __init__(self, value, trainable=True, name=None, dtype=None, regularizer=None):
        super().__init__(value, requires_grad=trainable, name=name, dtype=dtype)
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = None

    def assign(self, value):
        value = value.value if isinstance(value, Tensor) else value
        # a private copy: updates happen in place and must never write into the caller's array
        value = self.xp.asarray(self.backend.asarray(value), copy=True)
        if tuple(value.shape) != self.shape:
            raise ValueError(
                f"Variable {self.name!r}: cannot assign a value of shape {tuple(value.shape)} "
                f"to a variable of shape {self.shape}"
            )
        if value.dtype != self.value.dtype:
            value = self.xp.astype(value, self.value.dtype)
        self.value = value

    def __repr__(self):
        return (
            f"Variable({self.name!r}, shape={self.shape}, dtype={self.dtype}, "
            f"trainable={self.trainable})"
        )


class Function:
    """One differentiable operation: ``forward`` and ``backward`` on arrays.

    Subclasses implement::

        def forward(self, *arrays):          # -> array or tuple of arrays
        def backward(self, *grad_outputs):   # -> one gradient (or None) per input

    Parameters go to ``__init__``; anything backward needs is stored on
    ``self`` during forward. ``self.xp`` is the namespace of the inputs,
    ``self.backend`` their backend (for kernel look-ups) and
    ``self.needs_input_grad`` says which input gradients are wanted, so
    backward can skip the rest (return None for them).
    """

    inputs = ()
    outputs = ()
    xp = None
    backend = None
    needs_input_grad = ()

    @property
    def name(self):
        return type(self).__name__

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    def __call__(self, *inputs):
        # one pass over the inputs: their arrays and which of them need a gradient
        arrays, needs, record = [], [], False
        for x in inputs:
            if isinstance(x, Tensor):
                arrays.append(x.value)
                needs.append(x.requires_grad)
                record = record or x.requires_grad
            else:
                arrays.append(x)
                needs.append(False)
        backend = backends.backend_of(*arrays, op=type(self).__name__)
        self.backend = backend
        self.xp = backend.xp
        record = record and _GRAD_ENABLED
        self.needs_input_grad = tuple(needs) if record else (False,) * len(inputs)
        outputs = self.forward(*arrays)
        if not isinstance(outputs, tuple):
            tensor = _wrap(outputs)
            if record:
                self.inputs = inputs
                self.outputs = (weakref.ref(tensor),)
                tensor.requires_grad = True
                tensor.creator = self
            return tensor
        tensors = tuple(_wrap(y) for y in outputs)
        if record:
            self.inputs = inputs
            self.outputs = tuple(weakref.ref(t) for t in tensors)
            for t in tensors:
                t.requires_grad = True
                t.creator = self
        return tensors

    def release(self):
        """Drop what backward needed (called after backward unless the graph is retained)."""
        self.inputs = ()


def _wrap(array):
    tensor = Tensor.__new__(Tensor)
    tensor.value = array
    tensor.requires_grad = False
    tensor.grad = None
    tensor.creator = None
    tensor.name = None
    tensor.retains_grad = False
    tensor.mask = None
    return tensor


def _value(x):
    return x.value if isinstance(x, Tensor) else x


def _is_backend_array(value):
    return backends.registry._owner_or_none(value) is not None


def as_backend_array(value, dtype=None):
    """``value`` as an array: Tensors give their value, arrays of a backend stay
    where they are, and host data (NumPy arrays, lists, scalars) moves to the
    current backend. ``dtype`` (a name or dtype) casts."""
    if isinstance(value, Tensor):
        value = value.value
    current = backends.get_backend()
    owner = (
        None
        if isinstance(value, (int, float, bool, list, tuple))
        else (backends.registry._owner_or_none(value))
    )
    if owner is None and hasattr(value, "__dlpack__"):  # torch/JAX/...: zero-copy via DLPack
        value = current.from_dlpack(value)
        return value if dtype is None else current.asarray(value, dtype)
    if owner is None or (owner is not current and owner.host):
        return current.asarray(value, dtype)
    if dtype is not None:
        return owner.asarray(value, dtype)
    return value


_OPS = None


def bind_operators(ops_module):
    """Called by :mod:`dlx.ops` once it is imported: Tensor's operators (``+``,
    ``@``, ``.sum()``...) dispatch to its differentiable functions. Binding this
    way keeps the import direction of the levels: ops know Tensor, not vice versa."""
    global _OPS
    _OPS = ops_module


def _ops():
    return _OPS


def _topological_order(root):
    """Functions reachable from ``root``, each after every Function that consumes its outputs."""
    order, visited = [], set()
    stack = [(root.creator, False)]
    while stack:
        function, expanded = stack.pop()
        if expanded:
            order.append(function)
            continue
        if id(function) in visited:
            continue
        visited.add(id(function))
        stack.append((function, True))
        for x in function.inputs:
            if isinstance(x, Tensor) and x.creator is not None and id(x.creator) not in visited:
                stack.append((x.creator, False))
    order.reverse()
    return order


def _accumulate(grads, tensor, grad):
    # the entry holds the tensor too: once its consumers are released it may have no other owner
    key = id(tensor)
    previous = grads.get(key)
    grads[key] = (tensor, grad if previous is None else previous[1] + grad)


def _store_grad(tensor, grad):
    if tuple(grad.shape) != tensor.shape:
        raise RuntimeError(
            f"internal error: gradient of shape {tuple(grad.shape)} for a Tensor of shape "
            f"{tensor.shape}"
        )
    if grad.dtype != tensor.value.dtype:
        grad = tensor.xp.astype(grad, tensor.value.dtype)
    tensor.grad = grad if tensor.grad is None else tensor.grad + grad


def _run_backward(root, grad, retain_graph):
    if root.creator is None:
        _store_grad(root, grad)
        return
    grads = {id(root): (root, grad)}
    for function in _topological_order(root):
        inputs = function.inputs
        if not inputs and any(function.needs_input_grad):
            raise RuntimeError(
                f"backward through {function.name} a second time: its graph was freed by the "
                "first backward(); pass retain_graph=True to the first call."
            )
        outputs = function.outputs
        if len(outputs) == 1:  # the common case, without the lists below
            output = outputs[0]()
            entry = grads.pop(id(output), None) if output is not None else None
            if entry is None:
                continue
            if output.retains_grad:
                _store_grad(output, entry[1])
            input_grads = function.backward(entry[1])
        else:
            grad_outputs = _output_grads(function, grads)
            if grad_outputs is None:
                continue
            input_grads = function.backward(*grad_outputs)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for x, g, needed in zip(inputs, input_grads, function.needs_input_grad):
            if not needed or g is None:
                continue
            if x.creator is None:
                _store_grad(x, g)
            else:
                _accumulate(grads, x, g)
        if not retain_graph:
            function.release()


def _output_grads(function, grads):
    """The gradients of a multi-output Function's outputs (zeros for those that got none),
    or None when none of them got one."""
    grad_outputs = []
    for ref in function.outputs:
        output = ref()
        entry = grads.pop(id(output), None) if output is not None else None
        g = entry[1] if entry is not None else None
        if output is not None and output.retains_grad and g is not None:
            _store_grad(output, g)
        grad_outputs.append(g)
    if all(g is None for g in grad_outputs):
        return None
    if any(g is None for g in grad_outputs):
        xp = function.xp
        for i, ref in enumerate(function.outputs):
            if grad_outputs[i] is None:
                out = ref()
                if out is not None:
                    grad_outputs[i] = xp.zeros(out.shape, dtype=out.dtype, device=out.device)
    return grad_outputs

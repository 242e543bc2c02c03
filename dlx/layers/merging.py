"""Merge layers (Keras 3 semantics): combine a list of tensors into one.

Elementwise merges (``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``,
``Minimum``) take tensors whose shapes agree axis by axis, where an axis of size 1
broadcasts. ``Concatenate(axis=-1)`` joins tensors equal on every other axis.
``Dot(axes)`` takes the batched dot product of two tensors along ``axes``.
Shape mismatches raise ValueError naming the layer and every input shape.
"""

from .. import ops
from .layer import Layer


def _fmt(shapes):
    return ", ".join(str(tuple(s)) for s in shapes)


class _Merge(Layer):
    """Base of the merges: ``call(inputs)`` with ``inputs`` a list of tensors."""

    min_inputs = 2
    max_inputs = None

    def __call__(self, inputs, *args, **kwargs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' must be called on a list of tensors, "
                f"e.g. {type(self).__name__}()([a, b]); got a single tensor of shape "
                f"{tuple(getattr(inputs, 'shape', ()))}"
            )
        n = len(inputs)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            expected = (
                f"exactly {self.min_inputs}"
                if self.max_inputs == self.min_inputs
                else f"at least {self.min_inputs}"
            )
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs {expected} inputs, got {n} "
                f"(shapes {_fmt(getattr(x, 'shape', ()) for x in inputs)})"
            )
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape):
        self.check_shapes([tuple(s) for s in input_shape])

    def check_shapes(self, shapes):
        """Elementwise merges: same rank; each axis equal or 1 (broadcast)."""
        ranks = {len(s) for s in shapes}
        if len(ranks) > 1:
            self._shape_error(shapes, "inputs have different ranks")
        for axis in range(1, len(shapes[0])):
            sizes = {s[axis] for s in shapes if s[axis] not in (None, 1)}
            if len(sizes) > 1:
                self._shape_error(shapes, f"axis {axis} has sizes {sorted(sizes)}")

    def _shape_error(self, shapes, why):
        raise ValueError(
            f"{type(self).__name__} '{self.name}': cannot merge inputs of shapes {_fmt(shapes)}: "
            f"{why}"
        )

    def call(self, inputs):
        shapes = [tuple(x.shape) for x in inputs]
        self.check_shapes(shapes)
        if len({s[0] for s in shapes}) > 1 and 1 not in {s[0] for s in shapes}:
            self._shape_error(shapes, "batch sizes differ")
        return self.merge(list(inputs))

    def merge(self, inputs):
        raise NotImplementedError


class Add(_Merge):
    """Elementwise sum of the inputs."""

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class Subtract(_Merge):
    """``inputs[0] - inputs[1]`` (exactly two inputs)."""

    max_inputs = 2

    def merge(self, inputs):
        return inputs[0] - inputs[1]


class Multiply(_Merge):
    """Elementwise product of the inputs."""

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out


class Average(_Merge):
    """Elementwise mean of the inputs."""

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out * (1.0 / len(inputs))


class Maximum(_Merge):
    """Elementwise maximum of the inputs (ties share the gradient)."""

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.maximum(out, x)
        return out


class Minimum(_Merge):
    """Elementwise minimum of the inputs (ties share the gradient)."""

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.minimum(out, x)
        return out


class Concatenate(_Merge):
    """Join the inputs along ``axis`` (default -1); every other axis must agree."""

    min_inputs = 1

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise TypeError(f"Concatenate '{self.name}': axis must be an int, got {axis!r}")
        self.axis = axis

    def check_shapes(self, shapes):
        ranks = {len(s) for s in shapes}
        if len(ranks) > 1:
            self._shape_error(shapes, "inputs have different ranks")
        rank = len(shapes[0])
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            self._shape_error(
                shapes, f"axis {self.axis} is not a non-batch axis of rank-{rank} inputs"
            )
        axis = self.axis % rank
        for a in range(1, rank):
            if a == axis:
                continue
            sizes = {s[a] for s in shapes if s[a] is not None}
            if len(sizes) > 1:
                self._shape_error(
                    shapes,
                    f"every axis except the concatenation axis {self.axis} must match, "
                    f"but axis {a} has sizes {sorted(sizes)}",
                )

    def call(self, inputs):
        shapes = [tuple(x.shape) for x in inputs]
        self.check_shapes(shapes)
        if len({s[0] for s in shapes}) > 1:
            self._shape_error(shapes, "batch sizes differ")
        return ops.concat(list(inputs), axis=self.axis) if len(inputs) > 1 else inputs[0]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Dot(_Merge):
    """Batched dot product of two inputs along ``axes`` (an int or a pair, batch axis excluded).

    For ``x (batch, *X, d)`` and ``y (batch, *Y)`` contracted over ``axes=(ax, ay)``
    the output is ``(batch, *X without ax, *Y without ay)``, or ``(batch, 1)`` when
    nothing else remains (Keras's ``batch_dot``). ``normalize=True`` L2-normalizes
    both inputs along the contracted axes first (cosine similarity).
    """

    min_inputs = max_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        items = axes if isinstance(axes, (list, tuple)) else [axes]
        if len(items) not in (1, 2) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in items
        ):
            raise TypeError(
                f"Dot '{self.name}': axes must be an int or a pair of ints, got {axes!r}"
            )
        self.axes = list(axes) if isinstance(axes, (list, tuple)) else axes
        self.normalize = bool(normalize)

    def _pair(self, shapes):
        axes = (
            self.axes
            if isinstance(self.axes, list) and len(self.axes) == 2
            else [self.axes[0] if isinstance(self.axes, list) else self.axes] * 2
        )
        out = []
        for a, s in zip(axes, shapes):
            if not -len(s) <= a < len(s) or a % len(s) == 0:
                self._shape_error(
                    shapes, f"axes {self.axes} must name non-batch axes of each input"
                )
            out.append(a % len(s))
        return out

    def check_shapes(self, shapes):
        if any(len(s) < 2 for s in shapes):
            self._shape_error(shapes, "each input needs a batch axis and at least one more")
        ax, ay = self._pair(shapes)
        if (
            shapes[0][ax] is not None
            and shapes[1][ay] is not None
            and shapes[0][ax] != shapes[1][ay]
        ):
            self._shape_error(
                shapes,
                f"the contracted axes {ax} and {ay} have sizes {shapes[0][ax]} and {shapes[1][ay]}",
            )

    def call(self, inputs):
        x, y = inputs
        shapes = [tuple(x.shape), tuple(y.shape)]
        self.check_shapes(shapes)
        if shapes[0][0] != shapes[1][0]:
            self._shape_error(shapes, "batch sizes differ")
        ax, ay = self._pair(shapes)
        if self.normalize:
            x, y = _l2_normalize(x, ax), _l2_normalize(y, ay)
        xs, ys = shapes
        # x -> (batch, P, d) with the contracted axis last; y -> (batch, d, Q) with it first
        x_rest = [a for a in range(1, len(xs)) if a != ax]
        y_rest = [a for a in range(1, len(ys)) if a != ay]
        x = ops.transpose(x, (0, *x_rest, ax))
        y = ops.transpose(y, (0, ay, *y_rest))
        p = 1
        for a in x_rest:
            p *= xs[a]
        q = 1
        for a in y_rest:
            q *= ys[a]
        out = ops.matmul(ops.reshape(x, (xs[0], p, xs[ax])), ops.reshape(y, (ys[0], ys[ay], q)))
        out_shape = (xs[0],) + tuple(xs[a] for a in x_rest) + tuple(ys[a] for a in y_rest)
        if len(out_shape) == 1:
            out_shape = (xs[0], 1)
        return ops.reshape(out, out_shape)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def _l2_normalize(x, axis, epsilon=1e-12):
    squared = ops.sum(x * x, axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared, epsilon))


def add(inputs, **kwargs):
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)

"""Special functions the Array API standard lacks, written with its elementary ones."""

import math

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf(xp, x, backend=None):
    """The error function, to ~1e-15 (float64) or ~1e-7 (float32); ``backend``'s ``erf``
    kernel when it has one (the C library's on the CPU), else the series below.

    Uses the positive series erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!!,
    which has no cancellation; |x| is clipped where erf is 1 to working precision.
    Lower-precision inputs are evaluated in float64 and cast back, so float32
    results are correctly rounded like a library erf.
    """
    kernel = backend.kernel("erf") if backend is not None else None
    result = kernel(x) if kernel is not None else None
    if result is not None:
        return result
    dtype = x.dtype
    if dtype != xp.float64:
        x = xp.astype(x, xp.float64)
    limit, terms = 6.0, 110
    z = xp.clip(xp.abs(x), 0.0, limit)
    z2 = z * z
    term = z
    total = z
    for n in range(terms):
        term = term * (2.0 * z2 / (2 * n + 3))
        total = total + term
    result = _TWO_OVER_SQRT_PI * xp.exp(-z2) * total
    result = xp.where(x < 0, -result, result)
    return result if dtype == xp.float64 else xp.astype(result, dtype)

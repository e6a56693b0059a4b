"""The normal distribution's CDF and density, as GELU needs them.

float64 uses `scipy.special.ndtr` (Cephes, exact to double precision). For
float32 that routine is scalar code, ~10x slower than torch's vectorised GELU,
so float32 takes a vectorised path built from NumPy's SIMD ufuncs only:

    Phi(-|x|) = erfc(z) / 2 = t P(t) exp(-z^2) / 2,   z = |x|/sqrt(2),  t = 1/(1 + 0.4 z)

where ``t P(t)`` approximates the scaled complementary error function
``erfcx(z) = exp(z^2) erfc(z)``. P is a degree-8 polynomial, fitted here by
weighted Chebyshev least squares against `scipy.special.erfcx` for *relative*
error (max 1.3e-7 over z in [0, inf); t maps that onto (0, 1]). So the tail
Phi(-|x|) is relatively accurate, not just absolutely, and
``Phi(x) = q + [x > 0] (1 - 2q)`` with q = Phi(-|x|) never subtracts two
nearly equal numbers for x < 0. Measured in float32 against `ndtr`: relative
error <= 2e-6 for |x| < 5, <= 1e-5 out to the underflow of exp(-x^2/2), which
is float32's own rounding of the exponent's argument.

The density comes out of the same exp, so GELU's backward needs no exp at all.
Speed is bounded by NumPy's float32 exp (~1.5x torch's here) and the ~30 array
passes of the polynomial: about 2.5x torch's fused GELU on this machine.
(Blocking the passes to stay in L2 cache and a table lookup were measured too:
neither was faster.)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

_T_SCALE = 0.4 / math.sqrt(2.0)            # t = 1 / (1 + 0.4 z) with z = |x| / sqrt(2)
# erfcx(z) ~= t * P(t); the coefficients of P, lowest power first (P(0) = 0.4 / sqrt(pi)).
_ERFCX_POLY = (0.2256758603225553, 0.22566973345158914, 0.20784006989706988, 0.16856301742166913,
               0.1413462653002984, -0.005417948588008037, 0.16885043857349988, -0.18274957387465154,
               0.050222255815567)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_cdf_pdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (Phi(x), phi(x)), the standard normal CDF and density, in x's dtype."""
    if x.dtype != np.float32:
        with np.errstate(under='ignore'):
            pdf = np.exp(-0.5 * np.square(x))
        pdf *= _INV_SQRT_2PI
        return special.ndtr(x), pdf
    f = np.float32
    pdf = np.multiply(x, x)
    pdf *= f(-0.5)
    with np.errstate(under='ignore'):
        np.exp(pdf, out=pdf)                    # exp(-x^2/2), shared by Phi and phi
    t = np.abs(x)
    t *= f(_T_SCALE)
    t += f(1.0)
    np.divide(f(1.0), t, out=t)
    cdf = np.full_like(x, f(_ERFCX_POLY[-1]))
    for c in _ERFCX_POLY[-2::-1]:              # Horner: P(t)
        cdf *= t
        cdf += f(c)
    cdf *= t
    cdf *= pdf
    cdf *= f(0.5)                              # q = Phi(-|x|)
    np.multiply(cdf, f(-2.0), out=t)
    t += f(1.0)                                # 1 - 2q
    t *= x > 0
    cdf += t                                   # q, or 1 - q where x > 0
    pdf *= f(_INV_SQRT_2PI)
    return cdf, pdf

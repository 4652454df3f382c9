"""The coefficient matrix as one scalar formula, compiled to CUDA and evaluated with NumPy.

The formula for one entry of the two parts of ``A`` in
:func:`svdpi._coefficients.coefficient_parts` (``A = antisymmetric + upper ∘
extra``) is written once below, as statements in a tiny subset of Python.
:func:`cuda_preamble` translates them to a CUDA device function for
:class:`cupy.ElementwiseKernel`;
:func:`evaluate_numpy` runs the very same statements with NumPy, so the
formula the GPU runs is tested against the core on any machine. This module
imports neither CuPy nor NumPy at import time.

The subset: one assignment per line, ``name = expression``, where an
expression is built from names, numbers, ``+ - * /``, unary ``-``, one
comparison (``< <= > >= == !=``) and calls of :data:`FUNCTIONS`.
Inputs: ``lam_row``, ``lam_col`` (the eigenvalues of the entry's row and
column), ``row``, ``col`` (their indices), ``lam_floor`` (the matrix's
eigenvalue floor, see :func:`svdpi._coefficients.eigenvalue_floor`),
``eps`` (the dtype's machine epsilon), ``num_iters``. The last two
statements assign ``antisymmetric`` and ``extra``.
"""

from __future__ import annotations

import ast
from typing import Any, NamedTuple

METHODS = ("pi", "taylor", "analytic")
MODES = ("coefficients", "product", "symmetric_product")
INPUTS = ("lam_row", "lam_col", "row", "col", "lam_floor", "eps", "num_iters")
INTEGER_INPUTS = ("row", "col")
FUNCTIONS = ("where", "maximum", "minimum", "abs", "log1p", "expm1")

# The truncated series of 1 / (λ_row − λ_col) in r = small / big, evaluated
# as in svdpi._coefficients.geometric_sum: clamp at the floor, r − 1 as a
# difference, r^terms − 1 through expm1 and log1p of it, and the sum as that
# over r − 1, except at r = 1 (equal eigenvalues), where the denominator is
# r − 2 and `terms` is added: exactly `terms`, for any number of terms.
# Divided by the larger eigenvalue, signed +1 above the diagonal, −1 below.
_SERIES = """
lr = maximum(lam_row, lam_floor)
lc = maximum(lam_col, lam_floor)
big = maximum(lr, lc)
ratio_minus_one = -abs(lr - lc) / big
{terms}
power_minus_one = expm1(terms * log1p(ratio_minus_one))
equal = where(ratio_minus_one == 0, 1, 0)
series = power_minus_one / (ratio_minus_one - equal) + equal * terms
sign = where(row < col, 1, 0) - where(col < row, 1, 0)
antisymmetric = sign * series / big
{extra}
"""

FORMULAS = {
    # T terms on both sides, and r^T more above the diagonal (λ_row the larger one).
    "pi": _SERIES.format(terms="terms = num_iters", extra="extra = (power_minus_one + 1) / big"),
    # Powers 0 … K on both sides.
    "taylor": _SERIES.format(terms="terms = num_iters + 1", extra="extra = 0"),
    # The classical 1 / (λ_row − λ_col), infinite for equal eigenvalues; 1 is
    # added to the diagonal's denominator to keep 0/0 out, the numerator zeroes it.
    "analytic": """
off_diagonal = where(row == col, 0, 1)
antisymmetric = off_diagonal / (lam_row - lam_col + (1 - off_diagonal))
extra = 0
""",
}
OUTPUTS = ("antisymmetric", "extra")


class KernelSpec(NamedTuple):
    """Arguments of ``cupy.ElementwiseKernel(in_params, out_params, operation, name, ...)``."""

    in_params: str
    out_params: str
    operation: str
    name: str
    preamble: str


def parse_formula(method: str) -> list[tuple[str, ast.expr]]:
    """The formula of ``method`` as ``(target, expression)`` pairs, checked against the subset."""
    if method not in FORMULAS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    statements = []
    defined = set(INPUTS)
    for node in ast.parse(FORMULAS[method].strip()).body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            raise ValueError(
                f"only 'name = expression' statements are allowed: {ast.unparse(node)}"
            )
        _check_expression(node.value, defined)
        defined.add(node.targets[0].id)
        statements.append((node.targets[0].id, node.value))
    if tuple(target for target, _ in statements[-2:]) != OUTPUTS:
        raise ValueError("the formula must end by assigning 'antisymmetric', then 'extra'")
    return statements


def _check_expression(node: ast.expr, defined: set[str]) -> None:
    if isinstance(node, ast.Name):
        if node.id not in defined:
            raise ValueError(f"name {node.id!r} is used before it is assigned")
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"only int and float constants are allowed, got {node.value!r}")
    elif isinstance(node, ast.BinOp):
        if not isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
            raise ValueError(f"operator not allowed: {ast.unparse(node)}")
        _check_expression(node.left, defined)
        _check_expression(node.right, defined)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise ValueError(f"operator not allowed: {ast.unparse(node)}")
        _check_expression(node.operand, defined)
    elif isinstance(node, ast.Compare):
        if len(node.ops) != 1 or not isinstance(node.ops[0], tuple(_COMPARISONS)):
            raise ValueError(f"only single comparisons are allowed: {ast.unparse(node)}")
        _check_expression(node.left, defined)
        _check_expression(node.comparators[0], defined)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ValueError(f"call not allowed: {ast.unparse(node)}")
        arity = 3 if node.func.id == "where" else 2 if node.func.id.endswith("imum") else 1
        if len(node.args) != arity:
            raise ValueError(f"{node.func.id} takes {arity} arguments: {ast.unparse(node)}")
        for argument in node.args:
            _check_expression(argument, defined)
    else:
        raise ValueError(f"expression not allowed: {ast.unparse(node)}")


_COMPARISONS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


# --- CUDA --------------------------------------------------------------------

# The device functions are templates on `Real`, not `T`: CuPy declares the
# kernel's type placeholders (`typedef float T;`) at file scope, before the preamble.
CUDA_HELPERS = """\
// NaN-propagating maximum / minimum, like numpy.maximum / cupy.maximum.
template <typename Real>
__device__ Real svdpi_maximum(Real a, Real b) { return (a != a || a > b) ? a : b; }
template <typename Real>
__device__ Real svdpi_minimum(Real a, Real b) { return (a != a || a < b) ? a : b; }
"""


def _to_c(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant):
        return f"Real({node.value!r})"
    if isinstance(node, ast.BinOp):
        return f"({_to_c(node.left)} {_OPERATORS[type(node.op)]} {_to_c(node.right)})"
    if isinstance(node, ast.UnaryOp):
        return f"(-{_to_c(node.operand)})"
    if isinstance(node, ast.Compare):
        op = _COMPARISONS[type(node.ops[0])]
        return f"({_to_c(node.left)} {op} {_to_c(node.comparators[0])})"
    assert isinstance(node, ast.Call)  # parse_formula allowed nothing else
    args = [_to_c(argument) for argument in node.args]
    name = node.func.id
    if name == "where":
        return f"({args[0]} ? Real({args[1]}) : Real({args[2]}))"
    if name in ("maximum", "minimum"):
        return f"svdpi_{name}<Real>({args[0]}, {args[1]})"
    if name == "abs":
        return f"fabs({args[0]})"
    return f"{name}({args[0]})"


def _is_boolean(node: ast.expr, booleans: set[str]) -> bool:
    return isinstance(node, ast.Compare) or (isinstance(node, ast.Name) and node.id in booleans)


def device_function_name(method: str) -> str:
    return f"svdpi_coefficient_parts_{method}"


def cuda_device_function(method: str) -> str:
    """The CUDA device function computing the two parts of ``A[row, col]`` for ``method``."""
    booleans: set[str] = set()
    lines = []
    for target, expression in parse_formula(method):
        if _is_boolean(expression, booleans):
            booleans.add(target)
            ctype = "bool"
        else:
            ctype = "Real"
        lines.append(f"    const {ctype} {target} = {_to_c(expression)};")
    body = "\n".join(lines)
    return (
        f"template <typename Real>\n__device__ void {device_function_name(method)}(\n"
        "    const Real lam_row, const Real lam_col, const ptrdiff_t row, const ptrdiff_t col,\n"
        "    const Real lam_floor, const Real eps, const Real num_iters,\n"
        "    Real* antisymmetric_out, Real* extra_out) {\n"
        f"{body}\n    *antisymmetric_out = antisymmetric;\n    *extra_out = extra;\n}}\n"
    )


def cuda_preamble(method: str) -> str:
    return CUDA_HELPERS + "\n" + cuda_device_function(method)


# Unravel the flat output index i of a C-contiguous (batch, n, n) array into
# (k, p, q). The operand arrays are passed flat and C-contiguous.
_UNRAVEL = """\
const ptrdiff_t nn = n * n;
const ptrdiff_t k = i / nn;
const ptrdiff_t p = (i / n) % n;
const ptrdiff_t q = i % n;
const T lam_p = w[k * n + p];
const T lam_q = w[k * n + q];
const T floor_k = lam_floor[k];
T antisymmetric, extra;
"""


def kernel_spec(method: str, mode: str) -> KernelSpec:
    """The ``cupy.ElementwiseKernel`` arguments for ``method`` and ``mode``.

    ``mode``:

    * ``"coefficients"``: ``out = A`` (for tests and for callers that need ``A``);
    * ``"product"``: ``out = Aᵀ ∘ b``, the JVP's inner matrix;
    * ``"symmetric_product"``: ``out = (P + Pᵀ) / 2`` for ``P = Aᵀ ∘ b``, the
      VJP's inner matrix, in the same single pass over ``b``.

    Every operand is C-contiguous and flat: ``w`` (batch·n eigenvalues),
    ``lam_floor`` (batch floors), ``b`` (batch·n·n), ``out`` (batch·n·n).
    """
    function = device_function_name(method)
    preamble = cuda_preamble(method)  # validates method
    parts = "floor_k, eps, num_iters, &antisymmetric, &extra);"
    if mode == "coefficients":
        in_params = "raw T w, raw T lam_floor, int64 n, T eps, T num_iters"
        # A = antisymmetric + upper ∘ extra
        result = (
            f"{function}<T>(lam_p, lam_q, p, q, {parts}\n"
            "out = (p < q) ? antisymmetric + extra : antisymmetric;"
        )
    elif mode == "product":
        in_params = "raw T w, raw T lam_floor, raw T b, int64 n, T eps, T num_iters"
        # (Aᵀ)[p, q] = A[q, p]
        result = (
            f"{function}<T>(lam_q, lam_p, q, p, {parts}\n"
            "out = ((q < p) ? antisymmetric + extra : antisymmetric) * b[i];"
        )
    elif mode == "symmetric_product":
        in_params = "raw T w, raw T lam_floor, raw T b, int64 n, T eps, T num_iters"
        # (P + Pᵀ) / 2 = (N ∘ (bᵀ − b) + E ∘ (L∘b + (L∘b)ᵀ)) / 2, as in
        # svdpi._coefficients.coefficient_product: no cancellation between coefficients.
        result = (
            f"{function}<T>(lam_p, lam_q, p, q, {parts}\n"
            "const T b_qp = b[k * nn + q * n + p];\n"
            "const T b_below = (q < p) ? b[i] : ((p < q) ? b_qp : T(0));\n"
            "out = (antisymmetric * (b_qp - b[i]) + extra * b_below) * T(0.5);"
        )
    else:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    return KernelSpec(
        in_params=in_params,
        out_params="T out",
        operation=_UNRAVEL + result,
        name=f"svdpi_{mode}_{method}",
        preamble=preamble,
    )


# --- NumPy -------------------------------------------------------------------


def evaluate_numpy(method: str, inputs: dict[str, Any], dtype: Any) -> tuple[Any, Any]:
    """``(antisymmetric, extra)`` by the formula of ``method``, run with NumPy on ``inputs``.

    Constants are made ``dtype`` scalars, as ``Real(...)`` in the CUDA source.
    Division by zero (``"analytic"`` with equal eigenvalues) gives ``inf``
    silently, as on the GPU.
    """
    import numpy as np

    functions = {
        "where": np.where,
        "maximum": np.maximum,
        "minimum": np.minimum,
        "abs": np.abs,
        "log1p": np.log1p,
        "expm1": np.expm1,
    }
    scalar = np.dtype(dtype).type
    missing = set(INPUTS) - set(inputs)
    if missing:
        raise ValueError(f"missing inputs: {sorted(missing)}")
    env = dict(inputs)

    def run(node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Constant):
            return scalar(node.value)
        if isinstance(node, ast.BinOp):
            left, right = run(node.left), run(node.right)
            op = _OPERATORS[type(node.op)]
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op](
                left, right
            )
        if isinstance(node, ast.UnaryOp):
            return np.negative(run(node.operand))
        if isinstance(node, ast.Compare):
            left, right = run(node.left), run(node.comparators[0])
            op = _COMPARISONS[type(node.ops[0])]
            return {
                "<": np.less,
                "<=": np.less_equal,
                ">": np.greater,
                ">=": np.greater_equal,
                "==": np.equal,
                "!=": np.not_equal,
            }[op](left, right)
        assert isinstance(node, ast.Call)
        args = [run(argument) for argument in node.args]
        if node.func.id == "where":  # as T(a) : T(b) in CUDA
            args = [args[0], *(np.asarray(x).astype(dtype) for x in args[1:])]
        return functions[node.func.id](*args)

    with np.errstate(divide="ignore"):
        for target, expression in parse_formula(method):
            env[target] = run(expression)
    return tuple(np.asarray(env[name]).astype(dtype, copy=False) for name in OUTPUTS)


def _coefficient_parts_numpy(eigenvalues: Any, *, method: str, num_iters: int) -> Any:
    import array_api_compat.numpy as xp
    import numpy as np

    from svdpi.adapter import eigenvalue_floor

    w = np.asarray(eigenvalues)
    n = w.shape[-1]
    index = np.arange(n)
    inputs = {
        "lam_row": w[..., :, None],
        "lam_col": w[..., None, :],
        "row": index[:, None],
        "col": index[None, :],
        "lam_floor": np.asarray(eigenvalue_floor(w, xp))[..., None],
        "eps": np.finfo(w.dtype).eps,
        "num_iters": w.dtype.type(num_iters),
    }
    antisymmetric, extra = evaluate_numpy(method, inputs, w.dtype)
    upper = index[:, None] < index[None, :]
    return antisymmetric, np.broadcast_to(extra, antisymmetric.shape), upper


def coefficient_matrix_numpy(eigenvalues: Any, *, method: str, num_iters: int) -> Any:
    """``A`` for a NumPy batch of descending eigenvalues, through :func:`evaluate_numpy`.

    The reference twin of the kernel's ``"coefficients"`` mode.
    """
    import numpy as np

    antisymmetric, extra, upper = _coefficient_parts_numpy(
        eigenvalues, method=method, num_iters=num_iters
    )
    return np.where(upper, antisymmetric + extra, antisymmetric)


def coefficient_product_numpy(
    eigenvalues: Any, b: Any, *, method: str, num_iters: int, symmetrize: bool
) -> Any:
    """The reference twin of the ``"product"`` / ``"symmetric_product"`` modes."""
    import numpy as np

    antisymmetric, extra, upper = _coefficient_parts_numpy(
        eigenvalues, method=method, num_iters=num_iters
    )
    if not symmetrize:  # (Aᵀ)[p, q] = A[q, p] = −N[p, q] (+ E[p, q] below the diagonal)
        return np.where(upper.T, extra - antisymmetric, -antisymmetric) * b
    b_t = np.swapaxes(b, -1, -2)
    below = np.where(upper.T, b, np.where(upper, b_t, 0))
    return (antisymmetric * (b_t - b) + extra * below) * b.dtype.type(0.5)

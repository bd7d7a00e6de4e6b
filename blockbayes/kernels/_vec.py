"""Explicit float64 vectors for Numba kernels (LLVM ``<32 x double>`` values).

LLVM's loop vectoriser turns a loop over ``r`` into vector code only when the loop is the
innermost one and its arrays pass the runtime alias checks; a register-blocked kernel (a small
block of rows whose values stay in registers across many operations, as in a matrix-vector
product) is neither, so it stays scalar (design notes 42, 44). This module gives Numba code a
value type :data:`f64v` — ``LANES`` = 32 float64 lanes, which LLVM keeps as four ``zmm``
registers (four independent dependency chains per accumulator: one ``<4 x double>`` chain of
12 subtractions waits on the adder's latency, measured 1.4× slower than the column passes; 16
lanes 1.1× slower than 32, 64 lanes spill) — and the few operations such a kernel needs, each
one LLVM instruction with no fast-math flag:

* :func:`vload`, :func:`vstore`: ``LANES`` consecutive elements of a contiguous 1-D float64
  array (unaligned access, no bounds check: the caller guarantees ``0 ≤ i``, ``i + LANES ≤ len``);
* :func:`vsplat`: one float64 in every lane; :func:`vget`: one lane;
* ``+``, ``−``, ``*``, ``/`` between two ``f64v``: lane by lane, each lane rounded exactly as
  the scalar operation (IEEE, round to nearest; nothing is contracted into an FMA);
* :func:`vsum_into`: ``((acc + v₀) + v₁) + …`` over the first ``n`` lanes — the order of a
  scalar loop ``acc += v[r]`` over the rows.

So a kernel written with them gives every lane the bits of the scalar code with the same
operations in the same order.
"""
from __future__ import annotations

import operator

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, models, overload, register_model

LANES = 32
_VTY = ir.VectorType(ir.DoubleType(), LANES)


class F64Vec(types.Type):
    """Numba type of a ``<LANES x double>`` value."""

    def __init__(self):
        super().__init__(name=f"f64x{LANES}")


f64v = F64Vec()


@register_model(F64Vec)
class _F64VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VTY)


def _lane_ptr(context, builder, aryty, ary, i):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [i]), _VTY.as_pointer())


def _check_array(a):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype == types.float64):
        raise TypeError(f"f64v loads and stores need a contiguous 1-D float64 array, got {a}")


@intrinsic
def vload(typingctx, a, i):
    """``(a[i], a[i+1], …, a[i+LANES−1])`` (``a``: contiguous 1-D float64; no bounds check)."""
    _check_array(a)
    sig = f64v(a, types.intp)

    def codegen(context, builder, signature, args):
        return builder.load(_lane_ptr(context, builder, signature.args[0], args[0], args[1]),
                            align=8)

    return sig, codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """``a[i:i+LANES] = v`` (``a``: contiguous 1-D float64; no bounds check)."""
    _check_array(a)
    if v is not f64v:
        raise TypeError(f"vstore stores an f64v, got {v}")
    sig = types.void(a, types.intp, f64v)

    def codegen(context, builder, signature, args):
        builder.store(args[2], _lane_ptr(context, builder, signature.args[0], args[0], args[1]),
                      align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def vsplat(typingctx, x):
    """``x`` in every lane."""
    sig = f64v(types.float64)

    def codegen(context, builder, signature, args):
        v = builder.insert_element(ir.Constant(_VTY, ir.Undefined), args[0],
                                   ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, ir.Constant(_VTY, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                  [0] * LANES))

    return sig, codegen


@intrinsic
def vget(typingctx, v, lane):
    """Lane ``lane`` of ``v`` as a float64."""
    sig = types.float64(f64v, types.intp)

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return sig, codegen


def _binary(name):
    @intrinsic
    def op(typingctx, a, b):
        sig = f64v(f64v, f64v)

        def codegen(context, builder, signature, args):
            return getattr(builder, name)(args[0], args[1])   # no fast-math flags

        return sig, codegen

    return op


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


def _overload_operator(opfn, impl):
    @overload(opfn)
    def _ov(a, b):
        if a is f64v and b is f64v:
            return lambda a, b: impl(a, b)


_overload_operator(operator.add, vadd)
_overload_operator(operator.sub, vsub)
_overload_operator(operator.mul, vmul)
_overload_operator(operator.truediv, vdiv)


@intrinsic
def vsum_into(typingctx, acc, v, n):
    """``acc + v₀ + … + v_{n−1}``, added one lane at a time in lane order (``0 ≤ n ≤ LANES``;
    a plain loop's rounding, not a tree)."""
    sig = types.float64(types.float64, f64v, types.intp)

    def codegen(context, builder, signature, args):
        acc, v, n = args
        for lane in range(LANES):
            idx = ir.Constant(n.type, lane)
            s = builder.fadd(acc, builder.extract_element(v, ir.Constant(ir.IntType(32), lane)))
            acc = builder.select(builder.icmp_signed("<", idx, n), s, acc)
        return acc

    return sig, codegen

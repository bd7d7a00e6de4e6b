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
* :func:`vsplat`: one float64 in every lane;
* ``+``, ``−``, ``*``, ``/`` between two ``f64v``: lane by lane, each lane rounded exactly as
  the scalar operation (IEEE, round to nearest; nothing is contracted into an FMA);
* :func:`transpose4`: a 4 × 4 tile copied transposed (float32 or float64 either side)
  through shuffles in registers; :func:`transpose4_x0` the same for ``f(z) + sx·ξ``.

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


_V4 = ir.VectorType(ir.DoubleType(), 4)


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 4), lanes))


@intrinsic
def transpose4(typingctx, src, s0, sstride, dst, d0, dstride):
    """``dst[d0 + b·dstride + a] = src[s0 + a·sstride + b]`` for ``a, b < 4``: a 4 × 4 tile
    copied transposed, through four vector loads, eight shuffles of ``<4 x double>`` and four
    stores (element by element a transposition costs ~2 cycles per element; this ~0.3).
    ``src``, ``dst``: contiguous 1-D float32 or float64 (float32 widened exactly, float64 stored
    into float32 rounded to nearest, as an element assignment casts); no bounds check."""
    for a in (src, dst):
        _check_float_array(a, "transpose4")
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        sty, _, _, dty, _, _ = signature.args
        sa, s0, ss, da, d0, ds = args
        sdata = context.make_array(sty)(context, builder, sa).data
        ddata = context.make_array(dty)(context, builder, da).data
        rows = [_load_row(builder, sdata, s0, ss, a) for a in range(4)]
        _store_transposed(builder, rows, ddata, d0, ds)
        return context.get_dummy_value()

    return sig, codegen


def _load_row(builder, data, s0, ss, a):
    """Row ``a`` of a tile (``data[s0 + a·ss : +4]``) as ``<4 x double>`` (float32 widened)."""
    ety = data.type.pointee
    off = builder.add(s0, builder.mul(ss, ir.Constant(ss.type, a)))
    p = builder.bitcast(builder.gep(data, [off]), ir.VectorType(ety, 4).as_pointer())
    v = builder.load(p, align=4)            # float32 or float64: 4 is a valid bound
    return v if isinstance(ety, ir.DoubleType) else builder.fpext(v, _V4)   # exact


def _store_transposed(builder, rows, ddata, d0, ds):
    """Column ``b`` of the tile ``rows`` into ``ddata[d0 + b·ds : +4]`` (cast to its type)."""
    t0 = _shuffle(builder, rows[0], rows[1], [0, 4, 1, 5])
    t1 = _shuffle(builder, rows[0], rows[1], [2, 6, 3, 7])
    t2 = _shuffle(builder, rows[2], rows[3], [0, 4, 1, 5])
    t3 = _shuffle(builder, rows[2], rows[3], [2, 6, 3, 7])
    cols = [_shuffle(builder, t0, t2, [0, 1, 4, 5]), _shuffle(builder, t0, t2, [2, 3, 6, 7]),
            _shuffle(builder, t1, t3, [0, 1, 4, 5]), _shuffle(builder, t1, t3, [2, 3, 6, 7])]
    dety = ddata.type.pointee
    for b in range(4):
        off = builder.add(d0, builder.mul(ds, ir.Constant(ds.type, b)))
        v = cols[b]
        if not isinstance(dety, ir.DoubleType):
            v = builder.fptrunc(v, ir.VectorType(dety, 4))  # round to nearest, as a cast
        p = builder.bitcast(builder.gep(ddata, [off]), ir.VectorType(dety, 4).as_pointer())
        builder.store(v, p, align=4)


def _check_float_array(a, who):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype in (types.float32, types.float64)):
        raise TypeError(f"{who} needs contiguous 1-D float arrays, got {a}")


@intrinsic
def transpose4_x0(typingctx, z, zs0, xi, xs0, sstride, slope, sx, dst, d0, dstride):
    """:func:`transpose4` of ``x₀ = f(z) + sx·ξ``, ``f(z) = z if z ≥ 0 else slope·z`` (z widened
    to float64; each element the operations of ``f`` then ``+ sx·ξ``, in that order: the
    perturbed start of the Matheron rows formed inside their transposition):
    ``dst[d0 + b·dstride + a] = x₀`` of ``z[zs0 + a·sstride + b]``, ``xi[xs0 + a·sstride + b]``."""
    for a in (z, xi, dst):
        _check_float_array(a, "transpose4_x0")
    sig = types.void(z, types.intp, xi, types.intp, types.intp, types.float64, types.float64,
                     dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        zty, _, xty, _, _, _, _, dty, _, _ = signature.args
        za, zs0, xa, xs0, ss, slope, sx, da, d0, ds = args
        zdata = context.make_array(zty)(context, builder, za).data
        xdata = context.make_array(xty)(context, builder, xa).data
        ddata = context.make_array(dty)(context, builder, da).data
        zero = ir.Constant(_V4, [0.0] * 4)
        vslope = _splat4(builder, slope)
        vsx = _splat4(builder, sx)
        rows = []
        for a in range(4):
            zv = _load_row(builder, zdata, zs0, ss, a)
            f = builder.select(builder.fcmp_ordered(">=", zv, zero), zv, builder.fmul(vslope, zv))
            rows.append(builder.fadd(f, builder.fmul(vsx, _load_row(builder, xdata, xs0, ss, a))))
        _store_transposed(builder, rows, ddata, d0, ds)
        return context.get_dummy_value()

    return sig, codegen


def _splat4(builder, x):
    v = builder.insert_element(ir.Constant(_V4, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(_V4, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), 4), [0] * 4))

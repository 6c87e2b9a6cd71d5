"""benchmarks/hlo_cost.py against totals worked out by hand: loop bodies times their trip counts (which XLA's
own cost_analysis does not do), the expensive branch of a cond, loops of unknown length, bytes of a kernel,
and HLO text as other backends and versions print it (cuBLAS custom-calls, names without %, odd lines)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from benchmark_scripts import load
from jax import lax

hc = load("hlo_cost")
X = jnp.ones((64, 128), jnp.float32)
W = jnp.ones((128, 128), jnp.float32)
MATMUL = 2 * 64 * 128 * 128  # one [64,128] x [128,128]


def compiled(f, *args):
    return jax.jit(f).lower(*args).compile()


def builtin_flops(c) -> float:
    ca = c.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"])


def scan_tanh(n: int):
    def f(h, w):
        return lax.scan(lambda h, _: (jnp.tanh(h @ w), None), h, None, length=n)[0]
    return f


def test_matmul():
    w = jnp.ones((128, 256), jnp.float32)
    cost = hc.compiled_cost(compiled(lambda x, w: x @ w, X, w))
    dot = 2 * 64 * 128 * 256
    assert dot <= cost.flops < 1.01 * dot
    assert cost.kernels >= 1
    assert cost.while_loops == cost.unknown_trip_counts == 0
    assert cost.bytes >= 4 * (64 * 128 + 128 * 256 + 64 * 256)


def test_scan_counts_every_step():
    c10, c100 = compiled(scan_tanh(10), X, W), compiled(scan_tanh(100), X, W)
    a, b = hc.compiled_cost(c10), hc.compiled_cost(c100)
    for n, cost in ((10, a), (100, b)):
        assert cost.flops == pytest.approx(n * (MATMUL + 64 * 128), rel=0.02)
        assert (cost.while_loops, cost.unknown_trip_counts) == (1, 0)
    assert b.flops / a.flops == pytest.approx(10, rel=0.05)
    assert b.bytes / a.bytes == pytest.approx(10, rel=0.05)
    # every step launches the same kernels: 90 more steps add a whole multiple of 90
    assert b.kernels - a.kernels >= 90 and (b.kernels - a.kernels) % 90 == 0
    assert b.kernels / a.kernels == pytest.approx(10, rel=0.1)
    # why this module exists: XLA's cost_analysis counts the loop body once, whatever the trip count
    assert builtin_flops(c100) < 2 * builtin_flops(c10)


def test_while_of_unknown_length():
    def f(x, w):
        return lax.while_loop(lambda c: c[0].sum() < 1e6, lambda c: (c[0] @ w,), (x,))[0]
    cost = hc.compiled_cost(compiled(f, X, W))
    assert (cost.while_loops, cost.unknown_trip_counts) == (1, 1)
    assert cost.flops >= MATMUL  # the body counted once: a lower bound


def test_cond_counts_the_expensive_branch_once():
    wide, narrow = jnp.ones((128, 256), jnp.float32), jnp.ones((128, 8), jnp.float32)

    def f(p, x, wide, narrow):
        return lax.cond(p > 0, lambda: (x @ wide).sum(), lambda: (x @ narrow).sum())
    cost = hc.compiled_cost(compiled(f, 1.0, X, wide, narrow))
    expensive, cheap = 2 * 64 * 128 * 256, 2 * 64 * 128 * 8
    assert expensive <= cost.flops < expensive + cheap  # its reduce and compare, not the cheap branch


def test_nested_scan():
    def f(x, w):
        def outer(h, _):
            return lax.scan(lambda h, _: (h @ w, None), h, None, length=5)[0], None
        return lax.scan(outer, x, None, length=3)[0]
    cost = hc.compiled_cost(compiled(f, X, W))
    assert cost.flops == pytest.approx(15 * MATMUL, rel=0.02)
    assert (cost.while_loops, cost.unknown_trip_counts) == (2, 0)


def test_grad_of_gru_scan():
    """Forward: x@wi and h@wh per step; backward: the gradients of wi and wh and of h: 5 dots per step."""
    steps, batch, n_in, hidden = 7, 64, 32, 128

    def gru(h, xs, wi, wh):
        def step(h, x):
            gi, gh = x @ wi, h @ wh
            r = jax.nn.sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = jax.nn.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = jnp.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            h = (1 - z) * n + z * h
            return h, h
        return lax.scan(step, h, xs)[1].sum()

    args = (jnp.ones((batch, hidden)), jnp.ones((steps, batch, n_in)), jnp.ones((n_in, 3 * hidden)),
            jnp.ones((hidden, 3 * hidden)))
    cost = hc.compiled_cost(compiled(jax.grad(gru, argnums=(2, 3)), *args))
    g = 3 * hidden
    forward = batch * n_in * g + batch * hidden * g
    backward = n_in * g * batch + hidden * g * batch + batch * g * hidden
    dots = steps * 2 * (forward + backward)
    assert dots <= cost.flops < 1.1 * dots
    assert cost.unknown_trip_counts == 0 and cost.while_loops >= 1


def test_bytes_of_an_add():
    cost = hc.compiled_cost(compiled(lambda a, b: a + b, jnp.ones(1000), jnp.ones(1000)))
    assert cost.bytes >= 12000
    assert cost.flops >= 1000 and cost.kernels >= 1


def test_stacked_scan_bytes_grow_linearly():
    """A scan reading xs[t] and writing ys[t] moves one step per step, not the whole stacked array."""
    def f(xs, w):
        return lax.scan(lambda h, x: (jnp.tanh(h @ w + x), h), jnp.zeros((64, 128)), xs)[1]
    a = hc.compiled_cost(compiled(f, jnp.ones((10, 64, 128)), W))
    b = hc.compiled_cost(compiled(f, jnp.ones((100, 64, 128)), W))
    assert b.bytes / a.bytes == pytest.approx(10, rel=0.1)


# HLO as a GPU compile prints it: cuBLAS gemms as custom-calls with a (result, workspace) tuple, operands with
# their shapes inline, names without %, tuple comments, an escaped backend_config, a pred conditional.
GPU_STYLE = r"""
HloModule jit_step, entry_computation_layout={(f32[8,16]{1,0}, f32[16,32]{1,0})->f32[8,32]{1,0}}

add_f32 {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

fused_tanh (p0: f32[8,32]) -> f32[8,32] {
  p0 = f32[8,32]{1,0} parameter(0)
  ROOT t = f32[8,32]{1,0} tanh(p0)
}

body (arg: (s32[], f32[8,16], f32[16,32], /*index=3*/f32[8,32])) -> (s32[], f32[8,16], f32[16,32], f32[8,32]) {
  arg = (s32[], f32[8,16]{1,0}, f32[16,32]{1,0}, /*index=3*/f32[8,32]{1,0}) parameter(0)
  x = f32[8,16]{1,0} get-tuple-element(arg), index=1
  w = f32[16,32]{1,0} get-tuple-element(arg), index=2
  gemm = (f32[8,32], s8[1024]) custom-call(f32[8,16] x, f32[16,32] w), GEMM
  y = f32[8,32]{1,0} get-tuple-element(gemm), index=0
  t = f32[8,32]{1,0} fusion(y), kind=kLoop, calls=fused_tanh
  i = s32[] get-tuple-element(arg), index=0
  this line does not parse ((( = [
  ROOT out = (s32[], f32[8,16]{1,0}, f32[16,32]{1,0}, f32[8,32]{1,0}) tuple(i, x, w, t)
}

cond (arg: (s32[], f32[8,16], f32[16,32], f32[8,32])) -> pred[] {
  arg = (s32[], f32[8,16]{1,0}, f32[16,32]{1,0}, f32[8,32]{1,0}) parameter(0)
  i = s32[] get-tuple-element(arg), index=0
  n = s32[] constant(4)
  ROOT lt = pred[] compare(i, n), direction=LT
}

big (p: f32[8,32]) -> f32[] {
  p = f32[8,32]{1,0} parameter(0)
  z = f32[] constant(0)
  ROOT r = f32[] reduce(p, z), dimensions={0,1}, to_apply=add_f32
}

small (p: f32[8,32]) -> f32[] {
  ROOT k = f32[] constant(0)
}

ENTRY main (x: f32[8,16], w: f32[16,32]) -> f32[8,32] {
  x = f32[8,16]{1,0} parameter(0)
  w = f32[16,32]{1,0} parameter(1)
  zero = s32[] constant(0)
  c0 = f32[] constant(0)
  h = f32[8,32]{1,0} broadcast(c0), dimensions={}
  init = (s32[], f32[8,16]{1,0}, f32[16,32]{1,0}, f32[8,32]{1,0}) tuple(zero, x, w, h)
  loop = (s32[], f32[8,16], f32[16,32], f32[8,32]) while(init), condition=cond, body=body, backend_config=TRIPS
  out = f32[8,32]{1,0} get-tuple-element(loop), index=3
  p = pred[] constant(true)
  c = f32[] conditional(p, out, out), true_computation=big, false_computation=small
  ROOT res = f32[8,32]{1,0} add(out, out)
}
""".replace("GEMM", 'custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":'
            '{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}'
            ).replace("TRIPS", r'"{\"known_trip_count\":{\"n\":\"4\"}}"')


def test_gpu_style_text():
    cost = hc.hlo_cost(GPU_STYLE)
    gemm, tanh, compare, reduce, add = 2 * 8 * 32 * 16, 8 * 32, 1, 8 * 32, 8 * 32
    assert cost.flops == 4 * (gemm + tanh) + 5 * compare + reduce + add
    # broadcast + 4 x (gemm + tanh fusion) + 5 x compare + the reduce of the big branch + the add
    assert cost.kernels == 1 + 4 * 2 + 5 + 1 + 1
    assert (cost.while_loops, cost.unknown_trip_counts) == (1, 0)
    gemm_bytes = 4 * (8 * 16 + 16 * 32 + 8 * 32) + 1024
    assert cost.bytes >= 4 * gemm_bytes
    assert cost.as_dict()["kernels"] == cost.kernels


def test_robust_to_junk():
    assert hc.hlo_cost("") == hc.HloCost()
    assert hc.hlo_cost("not hlo at all\n{ ( [ \n}").flops == 0
    truncated = GPU_STYLE[: len(GPU_STYLE) // 2]
    assert hc.hlo_cost(truncated).flops >= 0


def test_scatter_into_a_loop_carry_counts_the_rows_written_not_the_array():
    """A replay buffer written one row per step (``.at[i].set`` in a scan) is updated in place: the bytes
    grow with the rows written, not with the buffer's size times the steps."""

    def costs(rows: int) -> float:
        def f(buf, xs):
            def step(b, x):
                i, row = x
                return b.at[i].set(row), None
            return jax.lax.scan(step, buf, xs)[0]

        buf = jnp.zeros((rows, 64), jnp.float32)
        xs = (jnp.arange(10) % rows, jnp.ones((10, 64), jnp.float32))
        return hc.compiled_cost(jax.jit(f, donate_argnums=0).lower(buf, xs).compile()).bytes

    small, big = costs(100), costs(100_000)
    assert big < small + 100_000 * 64 * 4 * 2  # at most the buffer copied in and out once, not once a step

"""Machine-independent accounting of a compiled XLA program: flops, bytes and kernel launches, with loops counted.

Why: ``compiled.cost_analysis()`` counts the body of a while loop (``lax.scan``, ``fori_loop``, ``while_loop``)
once, not times its trip count, so a scan of 100 matmuls reports the flops of one. This module reads the
optimised HLO text (``compiled.as_text()``) and walks it from the ENTRY computation, multiplying each loop body
by its ``known_trip_count``. It also counts the kernels (top-level ops) the program launches one after
another: for small recurrent networks on a GPU, launch latency times that count bounds the step time long
before flops or memory bandwidth do.

Rules:

* ENTRY runs once. A while's body runs n times and its condition n + 1 times, n being the loop's
  ``known_trip_count``; a loop without one counts as n = 1 and in ``unknown_trip_counts`` (totals are then
  lower bounds). A ``call`` (and an ``async-start``'s wrapped computation) runs at its caller's multiplicity.
* A ``conditional`` counts its most expensive branch only (by flops, then bytes, then kernels), once per
  time it runs: an upper bound on what any one branch costs, never the sum of branches that cannot all run.
* A fusion is one kernel. Its flops are the dots, convolutions, reductions and elementwise ops inside its
  fused computation (nested fusions included); its bytes are its operands and outputs at the top level,
  except that an operand only sliced inside (``dynamic-slice``/``slice``/``gather``) reads the slices, and an
  in-place ``dynamic-update-slice`` or ``scatter`` into an operand writes only the update (as a scan reading
  and writing one step of a stacked array, or a replay buffer written a row per step, does; otherwise the
  bytes of a scan would grow with the square of its length).
* Flops: 2*M*N*K per dot (K the product of the lhs contracting dims), 2 * output elements * kernel window
  per convolution (cuBLAS/cuDNN custom-calls on GPU included), one per output element of elementwise
  arithmetic/transcendental ops, one per input element of a reduce. The scalar ``to_apply`` computation of
  reduce/scatter/sort/map/select-and-scatter/all-reduce is applied per element and is never walked.
* Unknown op kinds cost 0 flops but still count as a kernel at the top level; lines that do not parse are
  skipped.

    python benchmarks/hlo_cost.py dump.txt       # prints the totals of an HLO text dump as JSON
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

# An array shape is (element type, dims); a tuple shape is a list of shapes.
Shape = tuple[str, tuple[int, ...]] | list

ELEMENTWISE = frozenset({
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "exponential", "log", "tanh",
    "logistic", "sqrt", "rsqrt", "power", "abs", "compare", "select", "clamp", "exponential-minus-one",
    "log-plus-one", "sine", "cosine", "tan", "atan2", "remainder", "cbrt", "erf", "sign", "floor", "ceil",
    "round-nearest-afz", "round-nearest-even",
})
# Top-level ops that launch nothing: bookkeeping, aliasing, control flow (whose computations are walked),
# and the waiting halves of asynchronous pairs.
NOT_KERNELS = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call", "conditional",
    "after-all", "opt-barrier", "add-dependency", "domain", "async-start", "async-update", "async-done",
    "all-reduce-done", "all-gather-done", "collective-permute-done", "copy-done", "send-done", "recv-done",
})
SLICING = frozenset({"dynamic-slice", "slice", "gather"})
IN_PLACE = frozenset({"dynamic-update-slice", "scatter"})  # write into operand 0 where it stands

_COMMENT = re.compile(r"/\*.*?\*/")
_METADATA = re.compile(r'metadata=\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*|->.*)?\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\](\{[^}]*\})?")
_OPCODE = re.compile(r"\s*([a-z][\w\-]*)\(")
_TRIP = re.compile(r'known_trip_count"?\s*:\s*\{\s*"?n"?\s*:\s*"?(\d+)')


@dataclass
class HloCost:
    """Totals of one compiled program, each op counted as often as it runs."""

    flops: float = 0.0  # 2*M*N*K per dot/convolution + 1 per element of elementwise ops and reduce inputs
    bytes: float = 0.0  # bytes read + written by the top-level ops (kernels)
    kernels: float = 0.0  # top-level ops launched one after another
    while_loops: int = 0  # while loops in the program (reachable from ENTRY, each counted once)
    unknown_trip_counts: int = 0  # while loops without known_trip_count (counted as running once)

    def as_dict(self) -> dict:
        """A plain dict, for JSON results."""
        return dataclasses.asdict(self)


@dataclass
class _Instr:
    name: str
    shape: Shape
    op: str
    operands: list[str]
    inline_shapes: list[Shape | None]
    attrs: str
    root: bool


@dataclass
class _Comp:
    name: str
    entry: bool
    instrs: list[_Instr] = dataclasses.field(default_factory=list)
    shapes: dict[str, Shape] = dataclasses.field(default_factory=dict)


@dataclass
class _Cost:
    flops: float = 0.0
    bytes: float = 0.0
    kernels: float = 0.0

    def add(self, other: _Cost, times: float = 1.0) -> None:
        self.flops += times * other.flops
        self.bytes += times * other.bytes
        self.kernels += times * other.kernels

    def key(self) -> tuple[float, float, float]:
        return (self.flops, self.bytes, self.kernels)


# ----------------------------------------------------------------------------------------------- shapes


def _elem_bytes(dtype: str) -> float:
    """pred 1, token 0, otherwise the bit width in the name / 8 (f32 4, bf16 2, c64 8, c128 16, s4 0.5)."""
    if dtype == "pred":
        return 1.0
    m = re.search(r"\d+", dtype)
    return int(m.group()) / 8 if m else 0.0


def _parse_shape(s: str, i: int = 0) -> tuple[Shape | None, int]:
    """The shape starting at s[i] (after spaces) and the index after it; (None, i) if there is none."""
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    if i < n and s[i] == "(":
        elems: list = []
        i += 1
        while i < n:
            while i < n and s[i] in " ,":
                i += 1
            if i < n and s[i] == ")":
                return elems, i + 1
            sub, j = _parse_shape(s, i)
            if sub is None:
                return None, i
            elems.append(sub)
            i = j
        return None, i
    m = _ARRAY.match(s, i)
    if not m:
        return None, i
    dims = []
    for d in m.group(2).split(","):
        d = d.strip().lstrip("<=")
        if d:
            dims.append(int(d) if d.isdigit() else 1)
    return (m.group(1), tuple(dims)), m.end()


def _leaves(shape: Shape | None) -> list[tuple[str, tuple[int, ...]]]:
    if shape is None:
        return []
    if isinstance(shape, list):
        return [leaf for sub in shape for leaf in _leaves(sub)]
    return [shape]


def _nbytes(shape: Shape | None) -> float:
    return sum(_elem_bytes(t) * math.prod(d) for t, d in _leaves(shape))


def _elements(shape: Shape | None) -> float:
    return float(sum(math.prod(d) for _, d in _leaves(shape)))


def _first_dims(shape: Shape | None) -> tuple[int, ...] | None:
    leaves = _leaves(shape)
    return leaves[0][1] if leaves else None


# ----------------------------------------------------------------------------------------------- parsing


def _split_top(s: str) -> list[str]:
    """s split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:k])
            start = k + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


def _matching(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i], or -1."""
    depth = 0
    for k in range(i, len(s)):
        if s[k] in "([{":
            depth += 1
        elif s[k] in ")]}":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _parse_instr(line: str) -> _Instr | None:
    m = _INSTR.match(line)
    if not m:
        return None
    shape, i = _parse_shape(line, m.end())
    if shape is None:
        return None
    op = _OPCODE.match(line, i)
    if not op:
        return None
    open_at = op.end() - 1
    close_at = _matching(line, open_at)
    if close_at < 0:
        return None
    operands, inline = [], []
    if op.group(1) not in ("parameter", "constant"):
        for part in _split_top(line[open_at + 1:close_at]):
            sub, j = _parse_shape(part)
            inline.append(sub)
            name = part[j:].strip() if sub is not None else part
            operands.append(name.split()[-1].lstrip("%") if name else "")
    else:
        operands = [line[open_at + 1:close_at].strip()]
        inline = [None]
    attrs = _METADATA.sub("", line[close_at + 1:])
    return _Instr(m.group(2), shape, op.group(1), operands, inline, attrs, bool(m.group(1)))


def _parse_params(sig: str | None) -> dict[str, Shape]:
    """Shapes of the parameters in a computation's signature, '(p0: f32[2], p1: (s32[], f32[3])) -> f32[]'."""
    out: dict[str, Shape] = {}
    if not sig or not sig.startswith("("):
        return out
    close = _matching(sig, 0)
    for part in _split_top(sig[1:close] if close > 0 else ""):
        name, _, rest = part.partition(":")
        shape, _ = _parse_shape(rest.strip())
        if shape is not None:
            out[name.strip().lstrip("%")] = shape
    return out


def _parse_module(text: str) -> dict[str, _Comp]:
    comps: dict[str, _Comp] = {}
    current: _Comp | None = None
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).rstrip()
        if not line:
            continue
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = _Comp(m.group(2), bool(m.group(1)))
                current.shapes.update(_parse_params(m.group(3)))
                comps[current.name] = current
            continue
        if line.strip() == "}":
            current = None
            continue
        try:
            instr = _parse_instr(line)
        except (ValueError, IndexError):
            instr = None
        if instr is not None:
            current.instrs.append(instr)
            current.shapes[instr.name] = instr.shape
    return comps


def _refs(attrs: str, key: str) -> list[str]:
    """Computation names of attribute key: 'key=%c' or 'key={%a, %b}'."""
    m = re.search(rf"(?<![\w\-]){key}=\{{([^}}]*)\}}", attrs)
    if m:
        return [p.strip().lstrip("%") for p in m.group(1).split(",") if p.strip()]
    m = re.search(rf"(?<![\w\-]){key}=%?([\w.\-]+)", attrs)
    return [m.group(1)] if m else []


def _dims_attr(attrs: str, key: str) -> list[int]:
    m = re.search(rf"{key}=\{{([^}}]*)\}}", attrs)
    return [int(x) for x in re.findall(r"\d+", m.group(1))] if m else []


# ----------------------------------------------------------------------------------------------- costs


def _operand_shape(comp: _Comp, instr: _Instr, k: int) -> Shape | None:
    if k >= len(instr.operands):
        return None
    return instr.inline_shapes[k] if instr.inline_shapes[k] is not None else comp.shapes.get(instr.operands[k])


def _conv_flops(out: Shape | None, kernel: Shape | None, attrs: str) -> float:
    """2 * output elements * (kernel elements per output feature)."""
    kdims, odims = _first_dims(kernel), _first_dims(out)
    m = re.search(r"dim_labels=\w*_(\w+)->", attrs)
    if not kdims or odims is None or not m or "o" not in m.group(1) or len(m.group(1)) != len(kdims):
        return 0.0
    per_out = math.prod(kdims) / max(kdims[m.group(1).index("o")], 1)
    return 2.0 * math.prod(odims) * per_out


def _op_flops(comp: _Comp, instr: _Instr) -> float:
    """Flops of one instruction, not counting the computations it calls."""
    op = instr.op
    if op == "dot":
        lhs = _first_dims(_operand_shape(comp, instr, 0))
        out = _first_dims(instr.shape)
        if lhs is None or out is None:
            return 0.0
        k = math.prod(lhs[d] for d in _dims_attr(instr.attrs, "lhs_contracting_dims") if d < len(lhs))
        return 2.0 * math.prod(out) * k
    if op == "convolution":
        return _conv_flops(instr.shape, _operand_shape(comp, instr, 1), instr.attrs)
    if op == "custom-call":
        target = re.search(r'custom_call_target="([^"]*)"', instr.attrs)
        target = target.group(1).lower() if target else ""
        if "gemm" in target or "matmul" in target:  # cuBLAS / cuBLASLt; the output may be (result, workspace)
            config = instr.attrs.replace("\\", "")
            m = re.search(r'lhs_contracting_dimensions"?\s*:\s*\[([^\]]*)\]', config)
            lhs = _first_dims(_operand_shape(comp, instr, 0))
            out = _first_dims(instr.shape)
            if not m or lhs is None or out is None:
                return 0.0
            dims = [int(x) for x in re.findall(r"\d+", m.group(1))]
            return 2.0 * math.prod(out) * math.prod(lhs[d] for d in dims if d < len(lhs))
        if "conv" in target:  # cuDNN keeps window= and dim_labels=
            return _conv_flops(instr.shape, _operand_shape(comp, instr, 1), instr.attrs)
        return 0.0
    if op == "reduce":
        inputs = max(len(instr.operands) // 2, 1)
        return sum(_elements(_operand_shape(comp, instr, k)) for k in range(inputs))
    if op in ELEMENTWISE:
        return _elements(instr.shape)
    return 0.0


def _access_bytes(comp: _Comp, instr: _Instr) -> float:
    """Bytes a top-level non-fusion op reads and writes."""
    shapes = [_operand_shape(comp, instr, k) for k in range(len(instr.operands))]
    out = _nbytes(instr.shape)
    if instr.op in SLICING and shapes:
        return min(out, _nbytes(shapes[0])) + sum(_nbytes(s) for s in shapes[1:]) + out
    if instr.op == "dynamic-update-slice" and len(shapes) > 1:
        return sum(_nbytes(s) for s in shapes[1:]) + _nbytes(shapes[1])
    if instr.op == "scatter" and len(shapes) >= 3:  # in place: indices, and the updates read and written
        k = (len(shapes) - 1) // 2
        return _nbytes(shapes[k]) + 2 * sum(_nbytes(s) for s in shapes[k + 1:])
    return sum(_nbytes(s) for s in shapes) + out


class _Walker:
    def __init__(self, comps: dict[str, _Comp]):
        self.comps = comps
        self.control: dict[str, _Cost] = {}
        self.fused: dict[str, float] = {}
        self.active: set[str] = set()

    def fused_flops(self, name: str) -> float:
        """Flops of one run of a fused (or other called) computation, nested fusions included."""
        if name in self.fused:
            return self.fused[name]
        comp = self.comps.get(name)
        if comp is None or name in self.active:
            return 0.0
        self.active.add(name)
        total = 0.0
        for instr in comp.instrs:
            if instr.op in ("fusion", "call"):
                total += sum(self.fused_flops(c) for c in _refs(instr.attrs, "calls") + _refs(instr.attrs, "to_apply"))
            else:
                total += _op_flops(comp, instr)
        self.active.discard(name)
        self.fused[name] = total
        return total

    def fusion_bytes(self, comp: _Comp, instr: _Instr) -> float:
        """Operands read and outputs written by a fusion, slices and in-place updates counted as such."""
        called = [self.comps[c] for c in _refs(instr.attrs, "calls") if c in self.comps]
        outer = [_operand_shape(comp, instr, k) for k in range(len(instr.operands))]
        if not called:
            return sum(_nbytes(s) for s in outer) + _nbytes(instr.shape)
        body = called[0]
        params: dict[str, int] = {}
        users: dict[str, list[tuple[_Instr, int]]] = {}
        by_name = {i.name: i for i in body.instrs}
        for i in body.instrs:
            if i.op == "parameter" and i.operands and i.operands[0].isdigit():
                params[i.name] = int(i.operands[0])
            for pos, o in enumerate(i.operands if i.op not in ("parameter", "constant") else []):
                users.setdefault(o, []).append((i, pos))
        read = 0.0
        for pname, k in params.items():
            size = _nbytes(outer[k] if k < len(outer) and outer[k] is not None else body.shapes.get(pname))
            us = users.get(pname, [])
            if us and all(u.op in SLICING | IN_PLACE and pos == 0 for u, pos in us):
                # slices read; an in-place update writes only its update (below) and reads nothing more
                read += min(size, sum(_nbytes(u.shape) for u, _ in us if u.op in SLICING))
            else:
                read += size
        root = next((i for i in body.instrs if i.root), None)
        if root is None:
            return read + _nbytes(instr.shape)
        outs = [by_name.get(o) for o in root.operands] if root.op == "tuple" else [root]
        write = 0.0
        for out in outs:
            if out is None:
                continue
            if out.op == "dynamic-update-slice" and out.operands and out.operands[0] in params:
                write += _nbytes(_operand_shape(body, out, 1))
            elif out.op == "scatter" and len(out.operands) >= 3 and out.operands[0] in params:
                write += _nbytes(_operand_shape(body, out, len(out.operands) - 1))
            else:
                write += _nbytes(out.shape)
        return read + write

    def run(self, name: str) -> _Cost:
        """Cost of one run of a control-flow computation (ENTRY, loop body/condition, branch, callee)."""
        if name in self.control:
            return self.control[name]
        comp = self.comps.get(name)
        if comp is None or name in self.active:
            return _Cost()
        self.active.add(name)
        cost = _Cost()
        for instr in comp.instrs:
            op = instr.op
            if op == "while":
                m = _TRIP.search(instr.attrs.replace("\\", ""))
                n = int(m.group(1)) if m else 1
                for body in _refs(instr.attrs, "body"):
                    cost.add(self.run(body), n)
                for cond in _refs(instr.attrs, "condition"):
                    cost.add(self.run(cond), n + 1)
            elif op == "conditional":
                branches = _refs(instr.attrs, "branch_computations") or (
                    _refs(instr.attrs, "true_computation") + _refs(instr.attrs, "false_computation"))
                costs = [self.run(b) for b in branches]
                if costs:
                    cost.add(max(costs, key=_Cost.key))
            elif op == "call":
                for callee in _refs(instr.attrs, "to_apply") + _refs(instr.attrs, "calls"):
                    cost.add(self.run(callee))
            elif op == "async-start":
                for callee in _refs(instr.attrs, "calls"):
                    cost.add(self.run(callee))
            elif op == "fusion":
                cost.kernels += 1
                cost.flops += sum(self.fused_flops(c) for c in _refs(instr.attrs, "calls"))
                cost.bytes += self.fusion_bytes(comp, instr)
            elif op not in NOT_KERNELS:
                cost.kernels += 1
                cost.flops += _op_flops(comp, instr)
                cost.bytes += _access_bytes(comp, instr)
        self.active.discard(name)
        self.control[name] = cost
        return cost

    def loops(self, name: str, seen: set[str]) -> tuple[int, int]:
        """(while loops, those without a known trip count) in the control flow reachable from name."""
        if name in seen or name not in self.comps:
            return 0, 0
        seen.add(name)
        loops = unknown = 0
        for instr in self.comps[name].instrs:
            callees: list[str] = []
            if instr.op == "while":
                loops += 1
                unknown += _TRIP.search(instr.attrs.replace("\\", "")) is None
                callees = _refs(instr.attrs, "body") + _refs(instr.attrs, "condition")
            elif instr.op == "conditional":
                callees = (_refs(instr.attrs, "branch_computations") + _refs(instr.attrs, "true_computation")
                           + _refs(instr.attrs, "false_computation"))
            elif instr.op in ("call", "async-start"):
                callees = _refs(instr.attrs, "to_apply") + _refs(instr.attrs, "calls")
            for c in callees:
                sub = self.loops(c, seen)
                loops, unknown = loops + sub[0], unknown + sub[1]
        return loops, unknown


def hlo_cost(hlo_text: str) -> HloCost:
    """Flops, bytes and kernels of an optimised HLO module's text, loop bodies times their trip counts."""
    comps = _parse_module(hlo_text)
    if not comps:
        return HloCost()
    entry = next((c.name for c in comps.values() if c.entry), list(comps)[-1])
    walker = _Walker(comps)
    cost = walker.run(entry)
    loops, unknown = walker.loops(entry, set())
    return HloCost(cost.flops, cost.bytes, cost.kernels, loops, unknown)


def compiled_cost(compiled: Any) -> HloCost:
    """hlo_cost of a ``jax.stages.Compiled`` (``jax.jit(f).lower(*args).compile()``), from its optimised HLO."""
    return hlo_cost(compiled.as_text())


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as f:
            print(json.dumps({"file": path, **hlo_cost(f.read()).as_dict()}))

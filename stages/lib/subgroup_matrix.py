"""Tensor-core GEMM kernels for the float16 libraries, on WebGPU's `chromium-experimental-subgroup-matrix`.

TVM's WGSL codegen has no subgroup-matrix types, so these kernels are written here, one per eligible kernel of a
float16 library, and the runtime creates them instead of TVM's own where the device has the feature
(web/runtime/tvm.js). TVM's kernel stays in the library as the fallback, and it fixes the interface: the
replacement keeps its bindings (copied from TVM's WGSL), its entry point and its dispatch grid, which the host
code computes from the scheduled function's `blockIdx` extents. So a kernel is eligible when:

- its lowered form is one product C[b, i, j] += f32(A[b, i, k]) * f32(B[b, k, j]) (or B[b, j, k]) of float16
  operands accumulated in float32, optionally followed by elementwise blocks over [b, i, j] (the float16 cast,
  bias, residual, sigmoid), as FuseTIR leaves a fused matmul or a Winograd GEMM;
- its schedule (the GEMM template of gemm.py) tiles the output into 64-row tiles (the last one of a batch
  ragged where M is not a multiple of 64: the template pads it, this kernel checks its rows) and BN-column tiles
  that divide N (grid N / BN x batch * ceil(M / 64)), and K is a multiple of the K step.

Each workgroup is one subgroup (32 lanes: Tint accepts matrix loads only at offsets that are uniform, and
`workgroup_id` is) over a 64 x 64 output tile, 4 x 4 fragments of 16 x 16, both operand tiles staged in
workgroup memory with vec4 loads, 16 of K at a time, the next step's loaded into registers while this one's
products run; a BN of 128 takes two workgroups (Tiling). The float32 accumulators go through workgroup memory to
the epilogue, which is the lowered function's own elementwise blocks printed as WGSL.
bench/subgroup_matrix_gemm.mjs measured this form as the fastest at the UNets' shapes (64-90 TFLOP/s on an
H200 against 22-31 for the float32 template), and bench/subgroup_matrix_gemm_check.py chose its tiling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FEATURES = ("shader-f16", "chromium-experimental-subgroup-matrix")
FORMAT = "websd-subgroup-matrix-kernels"
VERSION = 2  # 2: records of WGSL and workgroups_x

FRAG = 16  # fragment edge (the f16 x f16 -> f32 configuration every Dawn adapter with the feature offers)
TILE = 64  # output tile edge of one subgroup
K_STEP = 16  # K per staged step (the build's; Tiling takes others)
LANES = 32


class Ineligible(Exception):
    """The kernel is not of the one form these kernels implement; TVM's kernel runs."""


@dataclass
class Gemm:
    batch: int
    m: int
    n: int
    k: int
    a: str  # parameter names
    b: str
    b_k_major: bool  # B[b, k, j] (True) or B[b, j, k]
    out: str
    out_dtype: str  # float16 or float32
    epilogue: list[str]  # WGSL statements computing `out_value` from `acc` (f32) at b, row, col
    tile_m: int = TILE
    tile_n: int = TILE


# ---- the lowered function -> Gemm ----------------------------------------------------------------------------


def describe(func) -> Gemm:
    """The product and epilogue of a lowered PrimFunc, or Ineligible."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis.common_analysis import get_root_block

    sch = s_tir.Schedule(func)
    blocks = [sch.get(b) for b in sch.get_child_blocks(get_root_block(sch))]
    if not blocks:
        raise Ineligible("no blocks")
    allocated = {b.name for b in sch.get(get_root_block(sch)).alloc_buffers}
    params = {region.source.name: region.source for block in blocks for region in [*block.reads, *block.writes]
              if region.source.name not in allocated}
    main, rest = blocks[0], blocks[1:]
    kinds = [iv.iter_type for iv in main.iter_vars]
    reduce = tirx.IterVar.CommReduce
    if kinds[-1] != reduce or reduce in kinds[:-1] or len(kinds) not in (3, 4):
        raise Ineligible("not one reduction over the last axis")
    extents = [_int(iv.dom.extent) for iv in main.iter_vars]
    batch, (m, n, k) = (extents[0] if len(extents) == 4 else 1), extents[-3:]
    vars_ = [iv.var for iv in main.iter_vars]
    bvars, i, j, kk = (vars_[:1] if len(vars_) == 4 else []), *vars_[-3:]

    store = main.body
    acc_buf = main.writes[0].source
    if _kind(store) != "BufferStore" or str(acc_buf.dtype) != "float32":
        raise Ineligible("the product does not accumulate in float32")
    if main.init is None or not (_kind(main.init) == "BufferStore" and _is_zero(main.init.value)):
        raise Ineligible("the accumulator does not start at zero")
    value = store.value
    if not (_kind(value) == "Add" and _is_load(value.a, acc_buf) and _kind(value.b) == "Mul"):
        raise Ineligible("not C + x * y")
    a_load, b_load = (_uncast_f16(e) for e in (value.b.a, value.b.b))
    if _buf(a_load).name not in params or _buf(b_load).name not in params:
        raise Ineligible("an operand is not a parameter")
    if not _indices_are(a_load, [*bvars, i, kk]):
        raise Ineligible("A is not [b, i, k]")
    if _indices_are(b_load, [*bvars, kk, j]):
        b_k_major = True
    elif _indices_are(b_load, [*bvars, j, kk]):
        b_k_major = False
    else:
        raise Ineligible("B is neither [b, k, j] nor [b, j, k]")
    if not _indices_are(store, [*bvars, i, j]):
        raise Ineligible("C is not [b, i, j]")

    # The epilogue: each block an elementwise map over the same [b, i, j].
    names = {acc_buf.name: "acc"}  # buffer -> the WGSL value holding its element at [b, row, col]
    epilogue: list[str] = []
    out = acc_buf.name if acc_buf.name in params else None
    for n_block, block in enumerate(rest):
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in block.iter_vars):
            raise Ineligible("an epilogue block reduces")
        if [_int(iv.dom.extent) for iv in block.iter_vars] != extents[:-1]:
            raise Ineligible("an epilogue block has another iteration space")
        if block.init is not None or _kind(block.body) != "BufferStore":
            raise Ineligible("an epilogue block is not one store")
        own = [iv.var for iv in block.iter_vars]
        if not _indices_are(block.body, own):
            raise Ineligible("an epilogue block stores elsewhere than [b, i, j]")
        rename = dict(zip(own, ["b", "row", "col"][-len(own):]))
        expr = _Printer(params, names, rename, own).print(block.body.value)
        target = block.body.buffer
        local = f"v{n_block}"
        epilogue.append(f"let {local} = {expr};")
        names[target.name] = local
        if target.name in params:
            out = target.name
    if out is None or rest and names[out] != f"v{len(rest) - 1}":
        raise Ineligible("the last block does not write a parameter")
    result = names[out]
    out_dtype = str(params[out].dtype)
    if out_dtype not in ("float16", "float32") or [_int(d) for d in params[out].shape] != extents[:-1]:
        raise Ineligible("the output is not a float [b, i, j] parameter")
    epilogue.append(f"let out_value = {result};")
    return Gemm(batch, m, n, k, _buf(a_load).name, _buf(b_load).name, b_k_major, out, out_dtype, epilogue)


def _int(x) -> int:
    if hasattr(x, "value"):
        return int(x.value)
    raise Ineligible("a symbolic extent")


def _is_zero(e) -> bool:
    return hasattr(e, "value") and float(e.value) == 0.0


def _kind(node) -> str:
    """A TIR node's class name (the Python classes of loads and expressions moved between TVM's modules)."""
    return type(node).__name__


def _buf(access):
    """The buffer of a load (`source`) or a store (`buffer`)."""
    return access.source if hasattr(access, "source") else access.buffer


def _is_load(e, buf) -> bool:
    return _kind(e) in LOADS and _buf(e).same_as(buf)


LOADS = ("TensorLoad", "BufferLoad")


def _dtype(e) -> str:
    return str(e.dtype if hasattr(e, "dtype") else e.ty)


def _uncast_f16(e):
    if _kind(e) == "Cast" and _dtype(e) == "float32" and _kind(e.value) in LOADS and str(_buf(e.value).dtype) == "float16":
        return e.value
    raise Ineligible("an operand is not float16 widened to float32")


def _indices_are(access, variables) -> bool:
    return len(access.indices) == len(variables) and all(
        hasattr(ix, "same_as") and ix.same_as(v) for ix, v in zip(access.indices, variables))


WGSL_TYPES = {"float16": "f16", "float32": "f32"}


class _Printer:
    """A TIR expression of an epilogue block as WGSL; Ineligible for anything it does not know."""

    def __init__(self, params, names, rename, spatial):
        self.params, self.names, self.rename, self.spatial = params, names, rename, spatial

    def print(self, e) -> str:
        binary = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
        kind = _kind(e)
        if kind in binary:
            return f"({self.print(e.a)} {binary[kind]} {self.print(e.b)})"
        if kind in ("Max", "Min"):
            return f"{kind.lower()}({self.print(e.a)}, {self.print(e.b)})"
        if kind == "Cast":
            return f"{self._type(_dtype(e))}({self.print(e.value)})"
        if kind == "FloatImm":
            return f"{self._type(_dtype(e))}({float(e.value)!r})"
        if kind in LOADS:
            return self._load(e)
        if kind == "Call":
            name = str(e.op.name) if hasattr(e.op, "name") else ""
            args = [self.print(a) for a in e.args]
            if name == "tirx.sigmoid" or name == "tir.sigmoid":
                t = self._type(_dtype(e))
                return f"({t}(1.0) / ({t}(1.0) + exp(-{args[0]})))"
            for fn in ("exp", "tanh", "sqrt", "fabs"):
                if name in (f"tirx.{fn}", f"tir.{fn}"):
                    return f"{'abs' if fn == 'fabs' else fn}({', '.join(args)})"
        raise Ineligible(f"an epilogue operation this printer does not know: {kind}")

    @staticmethod
    def _type(dtype) -> str:
        if str(dtype) not in WGSL_TYPES:
            raise Ineligible(f"dtype {dtype}")
        return WGSL_TYPES[str(dtype)]

    def _load(self, e) -> str:
        name = _buf(e).name
        if name in self.names:
            if not _indices_are(e, self.spatial):
                raise Ineligible("an intermediate is read elsewhere than [b, i, j]")
            return self.names[name]
        if name not in self.params:
            raise Ineligible("a load of an unknown buffer")
        self._type(_buf(e).dtype)
        shape = [_int(d) for d in _buf(e).shape]
        terms, stride = [], 1
        for index, extent in reversed(list(zip(e.indices, shape))):
            terms.append(f"({self._index(index)}) * {stride}u" if stride != 1 else f"({self._index(index)})")
            stride *= extent
        return f"{name}_ptr[{' + '.join(reversed(terms))}]"

    def _index(self, e) -> str:
        kind = _kind(e)
        if kind == "Var":
            for v, w in self.rename.items():
                if e.same_as(v):
                    return w
            raise Ineligible("an index of an unknown variable")
        if kind == "IntImm":
            if int(e.value) < 0:
                raise Ineligible("a negative index")
            return f"{int(e.value)}u"
        ops = {"Add": "+", "Mul": "*", "FloorDiv": "/", "FloorMod": "%"}
        if kind in ops:
            return f"({self._index(e.a)} {ops[kind]} {self._index(e.b)})"
        raise Ineligible(f"an index expression this printer does not know: {kind}")


# ---- the scheduled function -> the grid ------------------------------------------------------------------------


def tiles(scheduled_func, gemm: Gemm) -> tuple[int, int]:
    """(BM, BN) of the schedule, from its blockIdx extents; Ineligible unless they tile the output exactly in
    the template's layout (blockIdx.x over N, blockIdx.y over batch x M)."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis.common_analysis import get_root_block

    sch = s_tir.Schedule(scheduled_func)
    extents: dict[str, int] = {}
    for block in sch.get_child_blocks(get_root_block(sch)):
        for loop in sch.get_loops(block):
            binding = sch.get(loop).thread_binding
            if binding is not None:
                extents[binding.thread_tag] = _int(sch.get(loop).extent)
    grid_x, grid_y = extents.get("blockIdx.x"), extents.get("blockIdx.y")
    if not grid_x or not grid_y or "blockIdx.z" in extents or "vthread.x" not in extents:
        raise Ineligible("not the GEMM template's launch")
    if gemm.n % grid_x or grid_y != gemm.batch * -(-gemm.m // TILE):
        raise Ineligible("the tiles do not divide the output's columns, or are not 64 rows")
    tile_n = gemm.n // grid_x
    if tile_n % TILE or gemm.k % K_STEP:
        raise Ineligible(f"tiles of {tile_n} columns, K {gemm.k}")
    return TILE, tile_n


# ---- WGSL --------------------------------------------------------------------------------------------------------


def lines(n, body) -> str:
    """body(0), ..., body(n - 1), a line each: the unrolled parts of a kernel."""
    return "\n".join(body(i) for i in range(n))


@dataclass(frozen=True)
class Tiling:
    """How the replacement cuts TVM's output tiles (64 rows x tile_n columns) among its workgroups, each one
    subgroup. `rows`: rows of one workgroup's tile (64, or 32 for twice the workgroups); `k_step`: K per staged
    step; `sequential`: one workgroup takes all of TVM's tile_n / 64 column tiles in turn (else a workgroup each);
    `prefetch`: the next step's operands are loaded into registers before this step's products, so their
    latency hides behind them; `direct`: the operands ("a", "b" or both) whose fragments load straight from
    their storage buffers instead of through workgroup memory (one subgroup reuses nothing it stages).
    The defaults are the build's: the fastest of bench/subgroup_matrix_gemm_check.py's tilings on the H200 at
    every long-running shape (bench/results/2026-12-01-h200-subgroup-matrix-gemm-tilings.json: SDXL's GEGLU out
    0.29 ms, against 0.59 with a K step of 32, sequential halves and no prefetch); B from storage where N is
    large (tiling_for)."""
    rows: int = TILE
    k_step: int = K_STEP
    sequential: bool = False
    prefetch: bool = True
    direct: str = ""

    def workgroups_x(self, gemm: Gemm) -> int:
        return (1 if self.sequential else gemm.tile_n // TILE) * (TILE // self.rows)

    def label(self) -> str:
        return (f"{self.rows}x{TILE}-k{self.k_step}{'-seq' if self.sequential else ''}"
                f"{'-prefetch' if self.prefetch else ''}{f'-direct-{self.direct}' if self.direct else ''}")


# B's fragments straight from storage where the output is at least this wide: measured 10% faster at SDXL's
# 2560- to 10240-wide linear layers (GEGLU in 0.503 against 0.555 ms, QKV 0.201 against 0.227) and slower at
# 1280 (GEGLU out 0.331 against 0.285): bench/results/2026-12-01-h200-subgroup-matrix-gemm-direct-loads.json.
DIRECT_B_MIN_N = 2560


def tiling_for(gemm: Gemm) -> Tiling:
    """The build's tiling for this product."""
    return Tiling(direct="b") if gemm.n >= DIRECT_B_MIN_N else Tiling()


def kernel(name: str, gemm: Gemm, tvm_wgsl: str, emulate: bool = False, tiling: Tiling = Tiling()) -> str:
    """The WGSL that replaces TVM's kernel `name` (its text `tvm_wgsl`): TVM's declarations of the bindings and
    the grid argument, then this kernel. `emulate` computes the fragments with plain arithmetic instead of
    subgroup matrices (same tiles, staging and epilogue), so a device without the feature can check the rest."""
    direct_a, direct_b = "a" in tiling.direct, "b" in tiling.direct
    header = _bindings(tvm_wgsl, gemm, staged=[x for x, d in (("a", direct_a), ("b", direct_b)) if not d])
    rows, ks = tiling.rows, tiling.k_step
    if TILE % rows or rows % FRAG or ks % FRAG or gemm.k % ks:
        raise Ineligible(f"tiling {tiling.label()} for K {gemm.k}")
    fm, fn = rows // FRAG, TILE // FRAG
    steps = ks // FRAG
    a_tile, b_tile = rows * ks, ks * TILE
    threads = LANES
    # B staged as [k][n] whichever way it lies in memory ([b, k, n] or, transposed on the way, [b, n, k])
    b_fill_rows, b_fill_vecs = (ks, TILE // 4) if gemm.b_k_major else (TILE, ks // 4)
    # element offsets of a lane's vec4 in storage, for the step starting at K offset `k`
    b_global = ((lambda k: f"b * K * N + ({k} + r) * N + col0 + q * 4u") if gemm.b_k_major
                else (lambda k: f"b * N * K + (col0 + r) * K + {k} + q * 4u"))

    ragged = gemm.m % TILE != 0  # TVM's grid covers whole 64-row tiles
    row_tiles = -(-gemm.m // TILE)  # TVM's 64-row tiles per batch (its grid's y)
    # A ragged last tile reads its missing rows as zeros (from a clamped address) and writes only real rows.
    a_row = "min(row0 + r, M - 1u)" if ragged else "(row0 + r)"
    a_global = lambda k: f"b * M * K + {a_row} * K + {k} + q * 4u"  # noqa: E731
    a_guard = "row0 + r < M" if ragged else None
    if direct_a and ragged:
        raise Ineligible("a ragged last tile stages A (its missing rows read as zeros)")
    operands = [*([] if direct_a else [("A", "As", rows, ks // 4, a_global, False, a_guard)]),
                *([] if direct_b else [("B", "Bs", b_fill_rows, b_fill_vecs, b_global, not gemm.b_k_major, None)])]
    # where a fragment (or, emulated, element kk of row r / column c) of each operand is read
    # (layout, pointer, offset of fragment i or j at sub-step s, stride) of each operand's fragments
    if direct_a:
        a_frag = ("row_major", f"&{gemm.a}_ptr",
                  lambda i, s: f"b * M * K + (row0 + {i * FRAG}u) * K + k0 + {s * FRAG}u", "K")
    else:
        a_frag = ("row_major", "&As", lambda i, s: f"{i * FRAG * ks + s * FRAG}u", f"{ks}u")
    if not direct_b:
        b_frag = ("row_major", "&Bs", lambda j, s: f"{s * FRAG * TILE + j * FRAG}u", f"{TILE}u")
    elif gemm.b_k_major:
        b_frag = ("row_major", f"&{gemm.b}_ptr",
                  lambda j, s: f"b * K * N + (k0 + {s * FRAG}u) * N + col0 + {j * FRAG}u", "N")
    else:
        b_frag = ("col_major", f"&{gemm.b}_ptr",
                  lambda j, s: f"b * N * K + (col0 + {j * FRAG}u) * K + k0 + {s * FRAG}u", "K")
    a_elem = f"{gemm.a}_ptr[b * M * K + (row0 + r) * K + k0 + kk]" if direct_a else f"As[r * {ks}u + kk]"
    b_elem = (f"Bs[kk * {TILE}u + c]" if not direct_b else f"{gemm.b}_ptr[b * K * N + (k0 + kk) * N + col0 + c]"
              if gemm.b_k_major else f"{gemm.b}_ptr[b * N * K + (col0 + c) * K + k0 + kk]")

    def load(op, rows_, vecs, glob, guard, into, k):
        """The operand's tile for the step at K offset `k` into registers `into`_t (a fixed trip count: the tile's
        vec4s are a multiple of the lanes, so every lane runs it)."""
        out = []
        for t in range(rows_ * vecs // threads):
            value = f"{op}_vec[({glob(k)}) / 4u]"
            if guard:
                value = f"select(vec4<f16>(), {value}, {guard})"
            out.append(f"      {{ let i = lid + {t * threads}u; let r = i / {vecs}u; let q = i % {vecs}u; "
                       f"{into}_{t} = {value}; }}")
        return "\n".join(out)

    def store(tile, rows_, vecs, transposed, into):
        """Registers `into`_t -> the workgroup tile; `transposed` stores row r, column c at [c][r]."""
        out = []
        for t in range(rows_ * vecs // threads):
            v = f"{into}_{t}"
            if transposed:
                body = " ".join(f"{tile}[(q * 4u + {c}u) * {rows_}u + r] = {v}.{'xyzw'[c]};" for c in range(4))
            else:
                body = (f"let at = r * {vecs * 4}u + q * 4u; {tile}[at] = {v}.x; {tile}[at + 1u] = {v}.y; "
                        f"{tile}[at + 2u] = {v}.z; {tile}[at + 3u] = {v}.w;")
            out.append(f"      {{ let i = lid + {t * threads}u; let r = i / {vecs}u; let q = i % {vecs}u; {body} }}")
        return "\n".join(out)

    registers = "\n".join(f"  var {op.lower()}_{t}: vec4<f16>;" for op, _, r_, v, *_ in operands
                          for t in range(r_ * v // threads))
    def loads(k):
        return "\n".join(load(op, r_, v, g, guard, op.lower(), k) for op, _, r_, v, g, _, guard in operands)
    stores = "\n".join(store(tile, r_, v, tr, op.lower()) for op, tile, r_, v, _, tr, _ in operands)

    cells = rows * TILE // LANES
    if emulate:
        # each lane sums the cells of the tile it later runs the epilogue on
        accs = f"  var accs: array<f32, {cells}>;"
        zero = f"    for (var e = 0u; e < {cells}u; e += 1u) {{ accs[e] = 0.0; }}"
        mma = f"""    for (var e = 0u; e < {cells}u; e += 1u) {{
      let cell = lid + e * {LANES}u;
      let r = cell / {TILE}u;
      let c = cell % {TILE}u;
      var sum = accs[e];
      for (var kk = 0u; kk < {ks}u; kk += 1u) {{ sum += f32({a_elem}) * f32({b_elem}); }}
      accs[e] = sum;
    }}"""

        def to_cs(j):
            return f"""    for (var e = 0u; e < {cells}u; e += 1u) {{
      let cell = lid + e * {LANES}u;
      if ((cell % {TILE}u) / {FRAG}u == {j}u) {{ Cs[(cell / {TILE}u) * {FRAG}u + cell % {FRAG}u] = accs[e]; }}
    }}"""
        enables = "enable f16;\n"
    else:
        left, right = "subgroup_matrix_left<f16, 16, 16>", "subgroup_matrix_right<f16, 16, 16>"
        accs = lines(fm * fn, lambda x: f"  var acc_{x // fn}_{x % fn} = subgroup_matrix_result<f32, 16, 16>();")
        zero = lines(fm * fn, lambda x: f"    acc_{x // fn}_{x % fn} = subgroup_matrix_result<f32, 16, 16>();")
        def frag(kind, where, n, s):
            layout, ptr, offset, stride = where
            return f"subgroupMatrixLoad<{kind}, {layout}>({ptr}, {offset(n, s)}, {stride})"
        mma = lines(steps, lambda s: "    {\n" + lines(fm, lambda i: (
            f"      let l_{i} = {frag(left, a_frag, i, s)};")) + "\n" + lines(fn, lambda j: (
            f"      let r_{j} = {frag(right, b_frag, j, s)};"))
            + "\n" + lines(fm * fn, lambda x: (
            f"      acc_{x // fn}_{x % fn} = subgroupMatrixMultiplyAccumulate(l_{x // fn}, r_{x % fn}, "
            f"acc_{x // fn}_{x % fn});")) + "\n    }")

        def to_cs(j):
            return lines(fm, lambda i: f"    subgroupMatrixStore<row_major>(&Cs, {i * FRAG * FRAG}u, acc_{i}_{j}, {FRAG}u);")
        enables = "enable f16;\nenable chromium_experimental_subgroup_matrix;\n"
    out_type = WGSL_TYPES[gemm.out_dtype]
    # Each lane writes 4 neighbouring outputs at once (one vec4 store), running the epilogue for each.
    per_column = "\n".join(
        f"        {{\n          let col = col4 + {u}u;\n          let acc = Cs[r * {FRAG}u + c4 + {u}u];\n"
        + "\n".join(f"          {line}" for line in gemm.epilogue) + f"\n          o{u} = out_value;\n        }}"
        for u in range(4))
    out_base = "b * M * N + " if gemm.batch > 1 else ""
    write_out = "\n".join(f"""{to_cs(j)}
    workgroupBarrier();
    for (var t = 0u; t < {rows * FRAG // 4 // LANES}u; t += 1u) {{
      let cell4 = lid + t * {LANES}u;
      let r = cell4 / {FRAG // 4}u;
      let c4 = (cell4 % {FRAG // 4}u) * 4u;
      let row = row0 + r;
      let col4 = col0 + {j * FRAG}u + c4;
      var o0: {out_type};
      var o1: {out_type};
      var o2: {out_type};
      var o3: {out_type};
      if ({"row < M" if ragged else "true"}) {{
{per_column}
        Out_vec[({out_base}row * N + col4) / 4u] = vec4<{out_type}>(o0, o1, o2, o3);
      }}
    }}
    workgroupBarrier();""" for j in range(fn))

    if tiling.prefetch:
        # registers hold step k0 + ks while step k0's products run
        main_loop = f"""{loads("0u")}
    for (var k0 = 0u; k0 < K; k0 += {ks}u) {{
{stores}
      workgroupBarrier();
      if (k0 + {ks}u < K) {{
{loads(f"(k0 + {ks}u)")}
      }}
{mma}
      workgroupBarrier();
    }}"""
    else:
        main_loop = f"""    for (var k0 = 0u; k0 < K; k0 += {ks}u) {{
{loads("k0")}
{stores}
      workgroupBarrier();
{mma}
      workgroupBarrier();
    }}"""
    per_tvm_tile = TILE // rows
    halves = gemm.tile_n // TILE if tiling.sequential else 1
    workgroups_x = tiling.workgroups_x(gemm)
    return f"""{enables}{header}
const M = {gemm.m}u;
const N = {gemm.n}u;
const K = {gemm.k}u;
{"" if direct_a else f"var<workgroup> As: array<f16, {a_tile}>;{chr(10)}"}{"" if direct_b else f"var<workgroup> Bs: array<f16, {b_tile}>;{chr(10)}"}var<workgroup> Cs: array<f32, {rows * FRAG}>;  // one column of fragments at a time: 4 KB keeps occupancy

@compute @workgroup_size({threads}, 1, 1)
fn {name}(
  @builtin(workgroup_id) blockIdx : vec3<u32>,
  @builtin(num_workgroups) gridDim : vec3<u32>,
  @builtin(local_invocation_index) lid : u32
) {{
  let x = blockIdx.z * gridDim.x + blockIdx.x;
  if (x >= podArgs.packGridDimX) {{ return; }}
  // x: TVM's column tile, then which of its {workgroups_x} parts ({per_tvm_tile} row part(s) x column part(s))
  let part = x % {workgroups_x}u;
  let tile_col = (x / {workgroups_x}u) * {gemm.tile_n // TILE // halves}u + part / {per_tvm_tile}u;
  let b = blockIdx.y / {row_tiles}u;
  let row0 = (blockIdx.y % {row_tiles}u) * {TILE}u + (part % {per_tvm_tile}u) * {rows}u;
{accs}
{registers}
  for (var h = 0u; h < {halves}u; h += 1u) {{
    let col0 = (tile_col * {halves}u + h) * {TILE}u;
{zero}
{main_loop}
{write_out}
  }}
}}
"""


BINDING = re.compile(r"^@group\(0\) @binding\(\d+\) var<(storage, read|storage, read_write|uniform)> (\w+) : (.+);$")


def copy_bindings(tvm_wgsl: str, required: list[str], vectors: dict[str, str] | None = None) -> str:
    """TVM's binding declarations and its PODArgs struct, which a replacement kernel keeps (same bindings and
    access); the `vectors` ({TVM's name: new name}) bound as vec4 arrays instead. Ineligible unless every name in
    `required` is among them."""
    vectors = vectors or {}
    out, in_struct, names = [], False, set()
    for line in tvm_wgsl.splitlines():
        if line.startswith("struct PODArgs"):
            in_struct = True
        if in_struct:
            out.append(line)
            in_struct = line != "}"
            continue
        m = BINDING.match(line)
        if not m:
            continue
        var = m.group(2)
        names.add(var)
        if var in vectors:
            element = m.group(3).removeprefix("array<").removesuffix(">")
            out.append(line.replace(f" {var} : array<{element}>", f" {vectors[var]} : array<vec4<{element}>>"))
        else:
            out.append(line)
    text = "\n".join(out)
    if "podArgs" not in text or not set(required) <= names:
        raise Ineligible("TVM's WGSL has another interface")
    return text


def _bindings(tvm_wgsl: str, gemm: Gemm, staged=("a", "b")) -> str:
    """TVM's bindings, the staged operands and the output as vec4 arrays (A_vec, B_vec, Out_vec)."""
    operands = {f"{gemm.a}_ptr": "A_vec", f"{gemm.b}_ptr": "B_vec", f"{gemm.out}_ptr": "Out_vec"}
    vectors = {name: vec for name, vec in operands.items() if vec[0].lower() in staged or vec == "Out_vec"}
    return copy_bindings(tvm_wgsl, list(operands), vectors)


# ---- a library ------------------------------------------------------------------------------------------------


def split_wgsl(source: str) -> dict[str, str]:
    """TVM's WebGPU module source (every kernel, each after a `// Function: <name>` banner) -> {name: WGSL}."""
    parts = re.split(r"//-+\n// Function: (\S+)\n//-+\n", source)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def library_kernels(lowered, scheduled, wgsl: dict[str, str], prefix: str, emulate: bool = False) -> dict:
    """{kernel name: record} for every eligible kernel of a library (lowered and scheduled: its IRModules before
    and after scheduling; wgsl: split_wgsl of its built WebGPU module; prefix: its system-library prefix). A record
    is the WGSL (`wgsl`) and how many of its workgroups take the place of one of TVM's along x (`workgroups_x`)."""
    from tvm import tirx

    from . import attention, subgroup_matrix_attention

    found = {}
    lowered_names = {g.name_hint for g in lowered.get_global_vars()}
    for gv in scheduled.get_global_vars():
        func = scheduled[gv]
        if not isinstance(func, tirx.PrimFunc) or gv.name_hint not in lowered_names:
            continue
        name = f"{prefix}{gv.name_hint}_kernel"
        if name not in wgsl:
            continue
        form = lowered[gv.name_hint]
        make = subgroup_matrix_attention.library_kernel if attention.is_attention(form) else library_kernel
        try:
            found[name] = make(name, form, func, wgsl[name], emulate)
        except Ineligible:
            continue
    return found


def library_kernel(name: str, lowered, scheduled, tvm_wgsl: str, emulate: bool = False) -> dict:
    """The kernels-file record replacing TVM's GEMM kernel `name`, or Ineligible."""
    gemm = describe(lowered)
    gemm.tile_m, gemm.tile_n = tiles(scheduled, gemm)
    tiling = tiling_for(gemm)
    return {"wgsl": kernel(name, gemm, tvm_wgsl, emulate=emulate, tiling=tiling), "workgroups_x": tiling.workgroups_x(gemm)}


def kernels_file(kernels: dict[str, dict]) -> bytes:
    return (json.dumps({"format": FORMAT, "version": VERSION, "features": list(FEATURES), "kernels": kernels},
                       indent=0, sort_keys=True) + "\n").encode()

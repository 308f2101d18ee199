"""The fused attention kernel (stages/lib/attention.py) on WebGPU's subgroup matrices, for the float16 libraries.

The same online softmax as attention.kernel, with both products on 16 x 16 fragments: one subgroup per workgroup
(Tint takes matrix loads only at uniform offsets) over 32 query rows, 64 keys per block:

- S = Q K^T: Q's fragments held for the whole kernel, K^T's loaded straight from the storage buffer;
- the scores go through workgroup memory, where each lane owns one row: its running maximum and sum, and the
  probabilities P = exp(S - max) written back as float16, in one pass over the row while its maximum holds;
- O += P V on fragments that stay in registers. O is rescaled only when a row's maximum grows by more than
  RESCALE_ABOVE (FlashAttention-4's lazy rescaling): until then P is exp(S - the old maximum) <= e^RESCALE_ABOVE,
  within float16, and the sum divides it out exactly at the end. The rescale (O through workgroup memory, each lane
  scaling its row) runs when any row needs it, decided by a workgroupUniformLoad: in practice in the first
  blocks only.

It replaces TVM's kernel keeping its bindings and entry point (web/runtime/tvm.js replaceKernels); TVM's grid has
one workgroup per `rows_per_group` query rows (attention.Config), this one per 32, so the record asks the runtime
for that many times the workgroups along x. Eligible: float16 inputs, heads a multiple of 16 and at most 64 wide
(O's staging fits the scores' workgroup memory), keys a multiple of the block, query rows a multiple of TVM's
group: SDXL's 64-wide heads over 4096 latent tokens, the largest attention of either family.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import attention
from .subgroup_matrix import FRAG, LANES, WGSL_TYPES, Ineligible, copy_bindings, lines

ROWS = LANES  # query rows per workgroup: one per lane in the softmax
KEYS = 64  # keys per block
MAX_HEAD_DIM = 64  # O (ROWS x d float32) is staged in the scores' workgroup memory (ROWS x KEYS float32)
RESCALE_ABOVE = 8.0  # e^8 ~ 2981: probabilities up to this stay well within float16 (65504)


@dataclass
class Shape:
    bh: int
    n_q: int
    n_k: int
    d: int
    out_dtype: str
    names: dict  # q, k_t, v, out -> TVM's WGSL binding
    workgroups_x: int  # this kernel's workgroups per TVM's


def describe(lowered, scheduled) -> Shape:
    """The attention's shapes and grid (lowered: the reference PrimFunc; scheduled: the GPU kernel), or Ineligible."""
    if not attention.is_attention(lowered):
        raise Ineligible("not the fused attention")
    (q_shape, q_dtype), (k_shape, k_dtype), (v_shape, v_dtype), (out_shape, out_dtype) = attention.buffers(lowered)
    (bh, n_q, d), n_k = q_shape, k_shape[2]
    if {q_dtype, k_dtype, v_dtype} != {"float16"} or out_dtype not in WGSL_TYPES:
        raise Ineligible("not float16 attention")
    if d % FRAG or d > MAX_HEAD_DIM or n_k % KEYS:
        raise Ineligible(f"heads {d} wide over {n_k} keys")
    grid = _grid_x(scheduled)
    if grid % bh or n_q % (grid // bh) or (n_q // (grid // bh)) % ROWS:
        raise Ineligible(f"TVM's grid {grid} does not split {bh} x {n_q} rows into groups of {ROWS}")
    names = dict(zip(("q", "k_t", "v", "out"), (str(p.name) for p in scheduled.params)))
    return Shape(bh, n_q, n_k, d, out_dtype, names, bh * n_q // ROWS // grid)


def _grid_x(scheduled) -> int:
    """The extent of the kernel's outermost loop, bound to blockIdx.x (attention.kernel's launch)."""
    node = scheduled.body
    while hasattr(node, "block") or type(node).__name__ == "Block":
        node = node.block if hasattr(node, "block") else node.body
    binding = getattr(node, "thread_binding", None)
    if binding is None or binding.thread_tag != "blockIdx.x":
        raise Ineligible("not attention.kernel's launch")
    return int(node.extent)


class _Fragments:
    """The subgroup-matrix operations as WGSL, or (`emulate`) the same operations in plain arithmetic: every lane
    computes whole fragments in private arrays (and writes identical values), so a device without the feature
    checks everything else about the kernel."""

    def __init__(self, emulate: bool):
        self.emulate = emulate
        self.sources: dict[str, tuple[str, str]] = {}  # emulated loads: function -> (array, element type)

    def type(self, kind: str) -> str:
        if self.emulate:
            return {"result": "FragF", "left": "FragL", "right": "FragR"}[kind]
        element = "f32" if kind == "result" else "f16"
        return f"subgroup_matrix_{kind}<{element}, {FRAG}, {FRAG}>"

    def zero(self) -> str:
        return "FragF()" if self.emulate else f"{self.type('result')}()"

    def load(self, kind: str, array: str, at: str, stride: str) -> str:
        if not self.emulate:
            return f"subgroupMatrixLoad<{self.type(kind)}, row_major>(&{array}, {at}, {stride})"
        function = f"load_{array}"
        self.sources[function] = (array, self.type(kind))
        return f"{function}({at}, {stride})"

    def mma(self, left: str, right: str, acc: str) -> str:
        return f"{'mma' if self.emulate else 'subgroupMatrixMultiplyAccumulate'}({left}, {right}, {acc})"

    def store(self, array: str, at: str, value: str, stride: str) -> str:
        if not self.emulate:
            return f"subgroupMatrixStore<row_major>(&{array}, {at}, {value}, {stride})"
        return f"store_{array}({at}, {value}, {stride})"

    def helpers(self) -> str:
        """The emulation: each lane holds the part of a fragment it multiplies, as hardware spreads fragments over
        the subgroup: of a result, 8 of its 256 values (row lane / 2, columns (lane % 2) * 8 ...); of a left
        operand that row; of a right operand those columns. `lane` is set by the kernel."""
        if not self.emulate:
            return ""
        own = FRAG * FRAG // LANES
        row, col = "(lane / 2u)", f"(lane % 2u) * {own}u"
        code = ["var<private> lane: u32;", f"struct FragF {{ e: array<f32, {own}> }}",
                f"struct FragL {{ e: array<f16, {FRAG}> }}", f"struct FragR {{ e: array<f16, {FRAG * own}> }}",
                f"""fn mma(a: FragL, b: FragR, c: FragF) -> FragF {{
  var r = c;
  for (var x = 0u; x < {own}u; x += 1u) {{
    for (var k = 0u; k < {FRAG}u; k += 1u) {{ r.e[x] += f32(a.e[k]) * f32(b.e[k * {own}u + x]); }}
  }}
  return r;
}}""", f"""fn store_S(at: u32, f: FragF, stride: u32) {{
  for (var x = 0u; x < {own}u; x += 1u) {{ S[at + {row} * stride + {col} + x] = f.e[x]; }}
}}"""]
        reads = {"FragF": (own, f"{row} * stride + {col} + x"), "FragL": (FRAG, f"{row} * stride + x"),
                 "FragR": (FRAG * own, f"(x / {own}u) * stride + {col} + x % {own}u")}
        for function, (array, frag) in sorted(self.sources.items()):
            count, at = reads[frag]
            code.append(f"""fn {function}(at: u32, stride: u32) -> {frag} {{
  var f: {frag};
  for (var x = 0u; x < {count}u; x += 1u) {{ f.e[x] = {array}[at + {at}]; }}
  return f;
}}""")
        return "\n".join(code) + "\n"


def _row_reads(t: str, width: int) -> str:
    """Lane lid's scores at columns t .. t + 3 of its row, each lane starting at its own column (fewer lanes on
    one workgroup-memory bank)."""
    return ", ".join(f"S[frag_at(lid, ({t} + {u}u + lid) % {width}u, {width}u)]" for u in range(4))


def kernel(name: str, shape: Shape, tvm_wgsl: str, emulate: bool = False) -> str:
    """The WGSL replacing TVM's attention kernel `name` (its text `tvm_wgsl`)."""
    f = _Fragments(emulate)
    q, k_t, v, out = (f"{shape.names[x]}_ptr" for x in ("q", "k_t", "v", "out"))
    header = copy_bindings(tvm_wgsl, [q, k_t, v, out])
    d_frags, row_frags, key_frags = shape.d // FRAG, ROWS // FRAG, KEYS // FRAG
    out_type = WGSL_TYPES[shape.out_dtype]
    left, right, result = "left", "right", "result"

    q_frags = lines(row_frags * d_frags, lambda x: (
        f"  let q_{x // d_frags}_{x % d_frags} = "
        f"{f.load(left, q, f'q_at + {x // d_frags * FRAG}u * D + {x % d_frags * FRAG}u', 'D')};"))
    o_frags = lines(row_frags * d_frags, lambda x: f"  var o_{x // d_frags}_{x % d_frags} = {f.zero()};")
    # All row x key fragments of the block accumulate side by side: independent products keep the tensor cores
    # busy (two chains of d / 16 dependent ones each ran at a quarter of the rate).
    s_frags = [(i, j) for i in range(row_frags) for j in range(key_frags)]
    scores = "\n".join(
        [f"    var s_{i}_{j} = {f.zero()};" for i, j in s_frags]
        + ["    {\n" + lines(key_frags, lambda j: (
            f"      let k_{j} = {f.load(right, k_t, f'k_at + {c * FRAG}u * NK + key0 + {j * FRAG}u', 'NK')};"))
           + "\n" + "\n".join(f"      s_{i}_{j} = {f.mma(f'q_{i}_{c}', f'k_{j}', f's_{i}_{j}')};" for i, j in s_frags)
           + "\n    }" for c in range(d_frags)]
        + [f"    {f.store('S', f'{(i * key_frags + j) * FRAG * FRAG}u', f's_{i}_{j}', f'{FRAG}u')};" for i, j in s_frags])
    o_store = lines(row_frags * d_frags, lambda x: (
        f"{f.store('S', f'{x * FRAG * FRAG}u', f'o_{x // d_frags}_{x % d_frags}', f'{FRAG}u')};"))
    o_load = lines(row_frags * d_frags, lambda x: (
        f"      o_{x // d_frags}_{x % d_frags} = "
        f"{f.load(result, 'S', f'{x * FRAG * FRAG}u', f'{FRAG}u')};"))
    products = lines(key_frags, lambda kf: "    {\n" + lines(row_frags, lambda i: (
        f"      let p_{i} = {f.load(left, 'P', f'{(i * key_frags + kf) * FRAG * FRAG}u', f'{FRAG}u')};")) + "\n"
        + lines(d_frags, lambda c: (
            f"      let v_{c} = {f.load(right, v, f'v_at + (key0 + {kf * FRAG}u) * D + {c * FRAG}u', 'D')};\n"
            + lines(row_frags, lambda i: f"      o_{i}_{c} = {f.mma(f'p_{i}', f'v_{c}', f'o_{i}_{c}')};")))
        + "\n    }")

    def keep_probabilities(indent: str) -> str:
        """Lane lid's probabilities p (columns t .. t + 3 of its row, as _row_reads reads them) into P and its sums."""
        return "\n".join([f"{indent}P[frag_at(lid, (t + {u}u + lid) % {KEYS}u, {KEYS}u)] = p[{u}];" for u in range(4)]
                         + [f"{indent}sums += vec4<f32>(p);"])

    enables = "enable f16;\n" + ("" if emulate else "enable chromium_experimental_subgroup_matrix;\n")
    set_lane = "\n  lane = lid;" if emulate else ""
    body = f"""{enables}{header}
const NQ = {shape.n_q}u;
const NK = {shape.n_k}u;
const D = {shape.d}u;
const NEG = {attention.NEG!r};
// the scores of a block ({ROWS} x {KEYS}), and O ({ROWS} x D) where it is rescaled and at the end; these and P
// hold their matrices fragment by fragment (16 x 16, rows of 16). Every workgroup variable is an array of a multiple
// of 16 bytes: with a 4-byte one among them, the H200's driver put the tensor-core loads and stores one element off
// their address (bench: every score one column early) while plain loads and stores were right.
var<workgroup> S: array<f32, {ROWS * KEYS}>;
var<workgroup> P: array<f16, {ROWS * KEYS}>;
// each row's sum, then whether any row's O needs rescaling (1.0)
var<workgroup> rows: array<f32, {ROWS + 4}>;
{f.helpers()}
// where a {ROWS}-row matrix `width` wide keeps (row, col)
fn frag_at(row: u32, col: u32, width: u32) -> u32 {{
  return ((row / {FRAG}u) * (width / {FRAG}u) + col / {FRAG}u) * {FRAG * FRAG}u + (row % {FRAG}u) * {FRAG}u + col % {FRAG}u;
}}

@compute @workgroup_size({LANES}, 1, 1)
fn {name}(
  @builtin(workgroup_id) blockIdx : vec3<u32>,
  @builtin(num_workgroups) gridDim : vec3<u32>,
  @builtin(local_invocation_index) lid : u32
) {{
  let tile = blockIdx.z * gridDim.x + blockIdx.x;
  if (tile >= podArgs.packGridDimX) {{ return; }}{set_lane}
  let b = tile / {shape.n_q // ROWS}u;
  let row0 = (tile % {shape.n_q // ROWS}u) * {ROWS}u;
  let q_at = (b * NQ + row0) * D;
  let k_at = b * D * NK;
  let v_at = b * NK * D;
{q_frags}
{o_frags}
  // lane lid's row: the maximum its probabilities are taken against, and their sum
  var row_max = NEG;
  var sum = 0.0;
  if (lid == 0u) {{ rows[{ROWS}] = 0.0; }}
  for (var key0 = 0u; key0 < NK; key0 += {KEYS}u) {{
{scores}
    workgroupBarrier();
    // One pass over the row: its probabilities under the running maximum, and the block's maximum beside them (four
    // running values per loop: independent chains). Only a row whose maximum grows by more than RESCALE_ABOVE, as
    // every row does in the first block, takes them again under its new maximum (the first pass's values clamped
    // meanwhile, so that nothing overflows).
    var maxes = vec4<f32>(NEG);
    var sums = vec4<f32>();
    for (var t = 0u; t < {KEYS}u; t += 4u) {{
      let s = vec4<f32>({_row_reads("t", KEYS)});
      maxes = max(maxes, s);
      let p = vec4<f16>(exp(min(s - row_max, vec4<f32>({RESCALE_ABOVE!r}))));
{keep_probabilities("      ")}
    }}
    let block_max = max(max(maxes.x, maxes.y), max(maxes.z, maxes.w));
    var scale = 1.0;
    if (block_max > row_max + {RESCALE_ABOVE!r}) {{
      if (row_max > NEG * 0.5) {{ rows[{ROWS}] = 1.0; }}  // O holds sums under the old maximum
      scale = exp(row_max - block_max);
      row_max = block_max;
      sum *= scale;
      sums = vec4<f32>();
      for (var t = 0u; t < {KEYS}u; t += 4u) {{
        let p = vec4<f16>(exp(vec4<f32>({_row_reads("t", KEYS)}) - row_max));
{keep_probabilities("        ")}
      }}
    }}
    sum += (sums.x + sums.y) + (sums.z + sums.w);
    if (workgroupUniformLoad(&rows[{ROWS}]) != 0.0) {{
      {o_store.replace(chr(10), chr(10) + '      ')}
      workgroupBarrier();
      for (var t = 0u; t < D; t += 1u) {{
        let at = frag_at(lid, (t + lid) % D, D);
        S[at] *= scale;
      }}
      workgroupBarrier();
{o_load}
      if (lid == 0u) {{ rows[{ROWS}] = 0.0; }}
    }}
{products}
    workgroupBarrier();
  }}
  {o_store.replace(chr(10), chr(10) + '  ')}
  rows[lid] = sum;
  workgroupBarrier();
  for (var e = 0u; e < {ROWS}u * D / {LANES}u; e += 1u) {{
    let at = e * {LANES}u + lid;
    let r = at / D;
    {out}[q_at + at] = {out_type}(S[frag_at(r, at % D, D)] / rows[r]);
  }}
}}
"""
    return body


def library_kernel(name: str, lowered, scheduled, tvm_wgsl: str, emulate: bool = False) -> dict:
    """The kernels-file record replacing TVM's attention kernel `name`, or Ineligible."""
    shape = describe(lowered, scheduled)
    return {"wgsl": kernel(name, shape, tvm_wgsl, emulate), "workgroups_x": shape.workgroups_x}

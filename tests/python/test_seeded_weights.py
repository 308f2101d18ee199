"""Each library's copy of the build's weight transform, and the benchmark's seeded weights that rest on it.

    .venv/bin/python -m pytest tests/python/test_seeded_weights.py -q

The benchmark checks full-size models on a real GPU against PyTorch with the same weights: it makes every
checkpoint tensor from its name (bench/seeded_weights.mjs, twin of bench/seeded_weights.py) and the library's
`<function>_transform_params` turns them into the weights the library takes, on the GPU. Shown here:
- on the CPU builds of both families, each library's transform of the real checkpoint gives exactly the shards
  that dump-params wrote (the same values rounded to the float16 storage), and a float16 library's gives the
  float32 library's results narrowed;
- on WebGPU (SwiftShader), the seeded tensors made in JavaScript through the WebGPU library's transform equal,
  bit for bit, the Python twin's through the CPU library's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, Compiled
from lib.cli import library_name
from lib.models import FAMILIES, family
from test_params_storage import read_cache
from test_webgpu import node

sys.path.insert(0, str(ROOT / "bench"))
from seeded_weights import seeded_tensor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def transform(library: Compiled, sources: list[np.ndarray]) -> list[np.ndarray]:
    """The library's `<function>_transform_params` on `sources`, on the CPU."""
    (fmeta,) = [f for f in library.meta["functions"].values() if f["params"]]
    tvm = library.tvm
    return [t.numpy() for t in library.vm[fmeta["transform"]]([tvm.runtime.tensor(s) for s in sources])]


def checkpoint_sources(build, sub, cache_meta) -> list[np.ndarray]:
    """The checkpoint's tensors in the order the transform takes them (cache metadata.sources)."""
    from safetensors.numpy import load_file

    tensors = {}
    for path in sorted((build.weights / sub.folder).glob("*.safetensors")):
        tensors.update({sub.parameter_name(k): v for k, v in load_file(path).items()})
    return [tensors[s["name"]].astype(s["dtype"]) for s in cache_meta["sources"]]


@pytest.mark.parametrize("fam", FAMILIES)
def test_library_transform_makes_the_shards(tiny_build, fam):
    build = tiny_build.of(fam)
    for sub in family(fam).submodules:
        if not sub.folder:
            continue
        meta, stored = read_cache(build.variant / sub.name / "params.v1")
        sources = checkpoint_sources(build, sub, meta)
        made = transform(Compiled(build.variant, sub.name), sources)
        assert len(made) == len(meta["param_names"])
        for name, value in zip(meta["param_names"], made):
            assert value.dtype == np.float32
            assert np.array_equal(value.astype(meta["storage_dtype"]).ravel().view(np.uint16), stored[name].view(np.uint16)), name
        for sub_, compute in family(fam).libraries():
            if sub_ is sub and compute == "float16":
                halves = transform(Compiled(build.variant, library_name(sub.name, compute)), sources)
                dtypes = Compiled(build.variant, library_name(sub.name, compute)).meta["functions"]
                (wanted,) = [[p["dtype"] for p in f["params"]] for f in dtypes.values() if f["params"]]
                assert [h.dtype.name for h in halves] == wanted
                assert all(np.array_equal(h, m.astype(h.dtype)) for h, m in zip(halves, made))


def test_seeded_weights_on_webgpu_match_python(tiny_build, tmp_path):
    build = tiny_build
    result = node(build.tree, "tests/python/js/seeded_params.mjs", build.variant / "model.json", tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    made = json.loads(result.stdout.strip().splitlines()[-1])
    weighted = [s for s in family(build.model).submodules if s.folder]
    assert sorted(made) == sorted(s.name for s in weighted)
    for sub in weighted:
        meta, _ = read_cache(build.variant / sub.name / "params.v1")
        sources = [seeded_tensor(s["name"], s["shape"]).numpy() for s in meta["sources"]]
        expected = transform(Compiled(build.variant, sub.name), sources)
        data = (tmp_path / f"{sub.name}.bin").read_bytes()
        offset = 0
        for rec, value in zip(made[sub.name], expected, strict=True):
            assert (rec["shape"], rec["dtype"]) == (list(value.shape), str(value.dtype))
            ours = np.frombuffer(data, dtype=value.dtype, count=value.size, offset=offset).reshape(value.shape)
            offset += value.nbytes
            assert np.array_equal(ours.view(np.uint32), value.view(np.uint32))
        assert offset == len(data)

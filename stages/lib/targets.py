"""Compilation targets. WebGPU device code with a wasm32 host (linked into the page's .wasm), and the CPU
build of the same modules that the tests compare against PyTorch."""

from __future__ import annotations

from .cli import StageError

TARGETS = ("webgpu", "cpu")


def target(name: str):
    import tvm

    if name == "webgpu":
        # maxStorageBufferBindingSize etc. are checked by WebGPU at run time; 256 threads is the default
        # maxComputeInvocationsPerWorkgroup every adapter offers.
        return tvm.target.Target({"kind": "webgpu", "max_num_threads": 256},
                                 host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})
    if name == "cpu":
        return tvm.target.Target({"kind": "llvm"})
    raise StageError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")

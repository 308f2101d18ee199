"""Compilation targets. WebGPU device code with a wasm32 host (linked into the page's .wasm), and the CPU
build of the same modules that the tests compare against PyTorch."""

from __future__ import annotations

from .cli import StageError

TARGETS = ("webgpu", "cpu")


# x86-64-v3: AVX2, FMA, F16C and the bit-manipulation set (Intel Haswell, AMD Excavator and everything since).
# F16C converts float16 <-> float32 in hardware; without it LLVM expands every conversion in software and the
# tiny model's float16 UNet took 159 s to compile instead of 35. The CPU libraries serve the tests and
# stages/lib/cpu_pipeline.py on the machine that built them, never the page.
X86_64_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}


# LLVM's -O1 for the CPU libraries: the tiny SD 1.5 UNet compiles in 0.55 x the time of the default -O3 (17.2 s
# against 31.4, medians of 3 paired runs), and a call takes 0.139 s instead of 0.113 (-O0: a third of the compile
# time, but 0.67 s a call). They check the WebGPU libraries
# and are run a few dozen times; compiling them is most of their cost.
CPU_OPT_LEVEL = 1


def cpu_level() -> dict:
    """{"mcpu": "x86-64-v3"} on an x86-64 host that has it, else {} (LLVM's generic CPU)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return {}
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return {}
    return {"mcpu": "x86-64-v3"} if X86_64_V3 <= set(flags) else {}


def target(name: str):
    import tvm

    if name == "webgpu":
        # maxStorageBufferBindingSize etc. are checked by WebGPU at run time; 256 threads is the default
        # maxComputeInvocationsPerWorkgroup every adapter offers.
        return tvm.target.Target({"kind": "webgpu", "max_num_threads": 256},
                                 host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})
    if name == "cpu":
        return tvm.target.Target({"kind": "llvm", "opt-level": CPU_OPT_LEVEL, **cpu_level()})
    raise StageError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")

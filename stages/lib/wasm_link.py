"""Links compiled submodules and the TVM web runtime into one .wasm for tvmjs.

    link_wasm([Path("artifacts/sd15/unet/lib.webgpu.v1.tar"), ...],
              Path("artifacts/tvm-runtime/0.27.0.post1"), Path("artifacts/sd15/stable_diffusion_webgpu.wasm"))

Each tar is what `relax.build(...).export_library(path.tar)` writes for the webgpu target with a wasm32
host: wasm object files (`lib0.o` with the host code and the VM executable, `<prefix>devc.o` with the WGSL
shaders). Every submodule is compiled as a system library with its own `system_lib_prefix`, so their
symbols do not clash and tvmjs opens each by prefix (web/runtime/tvm.js, `openVM`).

The emcc flags are those of `tvm.support.emcc.create_tvmjs_wasm` in the pinned wheel, but -O1 (LINK_LEVEL). That
function is not called because it looks the runtime up under $TVM_HOME/web/dist; ours
comes from stages/build_runtime.py.
ASYNCIFY stays off, as in create_tvmjs_wasm: tvmjs needs it only for its RPC server and time evaluator.

The result imports only the functions web/runtime/tvm.js and tvmjs provide (`JS_IMPORTS`); anything else
means a missing symbol (emcc is told not to fail on them because tvmjs supplies two), so the link stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .cli import StageError, file_if_changed

RUNTIME_UNITS = ("wasm_runtime.o", "tvmjs_support.o", "webgpu_runtime.o")

# Every link is emcc -O1: the objects are already optimised (LLVM -O3 for the runtime, TVM's for the libraries), and
# -O1 skips binaryen's whole-module pass. -O2 (which the page's .wasm had until 2026-12-01) made the file 8% smaller
# (tiny SD 1.5 17.3 MB against 18.9, full-size 23.1 against 25.0, of a 2 GB download) but took 26 s against 1 on a
# fast hour here (55 s on a slow one, in every rebuild after a tuning change and 6 times in `make test`); the host
# code it optimises only launches kernels: on the H200 the SD 1.5 UNet step read 76.5 and 77.2 ms with -O2 and 77.4
# between them without (bench/results/2026-12-01-h200-wasm-link-level-sd15.json). A shipped .wasm then drops its
# function names (wasm-opt --strip-debug, 1.6 s: 1.5 MB), which only debuggers read.
LINK_LEVEL = "-O1"
STRIP = ("wasm-opt", "--strip-debug")
EMCC_LINK_FLAGS = (
    "-std=c++17", "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
    "-s", "STANDALONE_WASM=1",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "TOTAL_MEMORY=160MB",
)

# What the page's wasm may import: tvmjs's Environment provides `env`, web/runtime/tvm.js the WASI calls
# (the ones emscripten's standalone libc uses for stdout, clocks and exit). Keep the two lists in step.
JS_IMPORTS = frozenset({
    ("env", "TVMFFIWasmSafeCall"),
    ("env", "TVMFFIWasmFunctionDeleter"),
    ("env", "emscripten_notify_memory_growth"),
    ("env", "__cxa_thread_atexit"),
    *(("wasi_snapshot_preview1", name) for name in (
        "clock_time_get", "environ_get", "environ_sizes_get", "fd_close", "fd_read", "fd_seek", "fd_write",
        "proc_exit")),
})


def runtime_objects(runtime_dir: Path) -> list[Path]:
    files = [Path(runtime_dir) / name for name in RUNTIME_UNITS]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise StageError(f"{runtime_dir} lacks {', '.join(missing)}; it is made by "
                         f"`python stages/build_runtime.py --out-dir {runtime_dir}`")
    return files


def extract_objects(tar_path: Path, into: Path) -> list[Path]:
    """The .o members of one export_library tar, in archive order, under `into`."""
    objects = []
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if not member.isfile() or name.suffix != ".o":
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise StageError(f"{tar_path}: unsafe member name {member.name!r}")
                target = into / name.name
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                objects.append(target)
    except (OSError, tarfile.TarError) as err:
        raise StageError(f"cannot read {tar_path} as a tar: {str(err).splitlines()[0]}") from None
    if not objects:
        raise StageError(f"{tar_path} holds no .o files; was it exported for the webgpu target?")
    return objects


def wasm_imports(wasm: bytes) -> list[tuple[str, str]]:
    """(module, name) of every import of a wasm binary."""

    def leb(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = wasm[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, pos

    def name(pos: int) -> tuple[str, int]:
        size, pos = leb(pos)
        return wasm[pos:pos + size].decode(), pos + size

    if wasm[:8] != b"\0asm\1\0\0\0":
        raise StageError("link produced something that is not a wasm module")
    found, pos = [], 8
    while pos < len(wasm):
        section, pos = wasm[pos], pos + 1
        size, pos = leb(pos)
        if section == 2:  # imports
            count, p = leb(pos)
            for _ in range(count):
                module, p = name(p)
                field, p = name(p)
                kind, p = wasm[p], p + 1
                if kind == 0:  # function: type index
                    _, p = leb(p)
                elif kind == 1:  # table: element type, limits
                    flags, p = leb(p + 1)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                elif kind == 2:  # memory: limits
                    flags, p = leb(p)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                elif kind == 3:  # global: value type, mutability
                    p += 2
                else:
                    raise StageError(f"unknown wasm import kind {kind}")
                found.append((module, field))
            return found
        pos += size
    return found


def link_wasm(object_tars: list[Path], runtime_dir: Path, out_wasm: Path, *, emcc: str = "emcc",
              shipped: bool = True) -> bool:
    """Links the submodules' objects with the runtime objects into `out_wasm`, written atomically and only
    when its bytes change. `shipped=False` keeps the function names (see LINK_LEVEL). Returns whether the
    file was (re)written."""
    if not object_tars:
        raise StageError("nothing to link: no submodule libraries given")
    runtime = runtime_objects(runtime_dir)
    with tempfile.TemporaryDirectory(prefix="wasm-link-") as tmp:
        objects, device_objects = [], {}
        for i, tar_path in enumerate(object_tars):
            into = Path(tmp) / f"{i}"  # every tar has a lib0.o
            into.mkdir()
            for obj in extract_objects(Path(tar_path), into):
                objects.append(obj)
                # `<system_lib_prefix>devc.o` holds the shaders; one name twice means one prefix twice,
                # which wasm-ld would report as a pile of duplicate symbols.
                if obj.name.endswith("devc.o"):
                    if obj.name in device_objects:
                        raise StageError(f"{device_objects[obj.name]} and {tar_path} were compiled with the same "
                                         f"system_lib_prefix ({obj.name[:-len('devc.o')]!r}); give each its own")
                    device_objects[obj.name] = tar_path
        out_wasm = Path(out_wasm)
        existed = out_wasm.exists() and out_wasm.stat().st_mtime_ns
        with file_if_changed(out_wasm) as tmp_wasm:
            cmd = [emcc, LINK_LEVEL, *EMCC_LINK_FLAGS, "-o", str(tmp_wasm),
                   *map(str, runtime), *map(str, objects)]
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as err:
                raise StageError(f"cannot run {emcc} ({err}); install emscripten (Debian package `emscripten`)")
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise StageError(f"emcc link of {len(object_tars)} libraries failed (log above)")
            if shipped:
                _strip_names(tmp_wasm)
            extra = sorted(set(wasm_imports(tmp_wasm.read_bytes())) - JS_IMPORTS)
            if extra:
                raise StageError("the linked wasm needs functions nobody provides (a library or runtime unit "
                                 f"missing?): {', '.join(f'{m}.{n}' for m, n in extra)}")
            print(f"wasm-link: {out_wasm.name} from {len(object_tars)} libraries in {time.monotonic() - start:.0f} s")
        return not existed or out_wasm.stat().st_mtime_ns != existed


def _strip_names(wasm: Path) -> None:
    """Drops the name section in place (binaryen's wasm-opt, which emscripten depends on)."""
    stripped = wasm.with_name(wasm.name + ".stripped")
    try:
        proc = subprocess.run([*STRIP, str(wasm), "-o", str(stripped)], capture_output=True, text=True)
    except OSError as err:
        raise StageError(f"cannot run {STRIP[0]} ({err}); install binaryen (Debian package `binaryen`, which "
                         "emscripten depends on)") from None
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise StageError(f"{' '.join(STRIP)} failed on the linked wasm (log above)")
    stripped.replace(wasm)

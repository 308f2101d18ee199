"""The WebGPU library against the CPU library, `make generate` against `make reference`, and the runtime's
errors on bad input, with the tiny SD 1.5 model that conftest builds once per session.

    .venv/bin/python -m pytest tests/python/test_webgpu.py -q

WebGPU runs in Node on Dawn (the `webgpu` npm package): on a GPU if the machine has one, else on SwiftShader
(Chromium's CPU Vulkan driver), as `make generate` picks it. On SwiftShader each node process spends most of its
time compiling shaders (the first UNet call and the VAE most of a minute each on a busy core), so the four long
runs (each family's submodule calls, and each family's generations: one `make generate` per family, one image
per scheduler from one model load) start together in the background and use every core. Each is killed, and its test fails, past NODE_TIMEOUT
or MEMORY_LIMIT (a shader SwiftShader cannot compile has grown a process to tens of GB).

Submodules: tests/python/js/run_functions.mjs loads the variant's model.json with the page's loader
(web/runtime/load.js) and calls each compiled function as the pipeline does, weights after the inputs; the same
inputs (raw files written here) go through the CPU library (`lib.cpu.v1.so` with the same tensor cache, loaded
as CompiledPipeline loads it). Both sides widen the same float16-stored weights to float32 (exactly, in
JavaScript and in numpy), so this compares compiled code alone. Float outputs must agree to a relative error of
1e-3; the VAE's packed RGBA byte by byte but for a tiny fraction off by one; and WebGPU must report no error.

Float16 libraries: the same calls for CLIP and the UNet through their float16 libraries, on lavapipe (Mesa's CPU
Vulkan driver, fetched by `make setup`), the one adapter here with shader-f16: their error against the float32
libraries may be at most twice that of the float16 libraries' CPU builds. The runs above, on SwiftShader, check
that a device without shader-f16 gets the float32 libraries.

Pipeline: `make generate` (web/node/generate.mjs) against diffusers (stages/reference.py, what `make reference`
runs) with the full-precision weights, for every scheduler of each family, same prompt, negative prompt, seed and guidance:
PSNR >= 30 dB, and neither image flat.

Bad input, through the Node CLI: a tensor cache whose parameter count the library does not take, a missing
weight shard, no WebGPU adapter; each ends quickly with a non-zero exit and a message naming the problem.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (LAVAPIPE_ICD, SWIFTSHADER_ICD, Compiled, clean_env, lavapipe_env, make_command,
                      relative_error)
from lib.models import FAMILIES, family

TOLERANCE = 1e-3
# make generate against diffusers with the full-precision weights, measured on SwiftShader: 63.0 (pndm), 64.0 (dpm),
# 63.4 (euler) dB with float16 shards, 82.5-84.3 dB with float32 ones. The bound, set before weights were stored
# as float16, keeps a wide margin.
PSNR_MIN = 30.0
PROMPTS = ("blurry, low quality, watermark", "a photo of an astronaut riding a horse on the moon")
# Per long node run (the submodule calls, one generation). On SwiftShader most of it is compiling shaders: about
# 150 s of which a third is the first UNet call and another the VAE, with four runs at once on two cores.
NODE_TIMEOUT = 480
# Per long node run, all its processes together; about 600 MB each on SwiftShader. A shader SwiftShader cannot
# compile sensibly has taken tens of GB (until the kernel's OOM killer picked a process, anyone's).
MEMORY_LIMIT = 3 * 2**30
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning"),
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node"),
]


def gpu_env(**extra: str) -> dict[str, str]:
    """The environment `make generate` gives node: SwiftShader's Vulkan driver when the machine has no GPU."""
    env = clean_env()
    if not (os.path.exists("/dev/nvidia0") or glob.glob("/dev/dri/renderD*")):
        env["VK_ICD_FILENAMES"] = SWIFTSHADER_ICD
    env.update(extra)
    return env


def node(tree: Path, script: str, *args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """`node SCRIPT ARGS` in the session's source tree (the runtime make generate uses), output as text."""
    return subprocess.run(["node", script, *map(str, args)], cwd=tree, env=gpu_env(**env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in process group `pgid` (Linux /proc)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ..., rss (the 22nd)
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return total


class Guarded:
    """A command in a session of its own, in the background, killed with everything it started when it runs
    past `timeout` seconds or its processes hold more than MEMORY_LIMIT together. stdout and stderr go to
    `log`.out and `log`.err."""

    def __init__(self, command: list, *, cwd: Path, env: dict, log: Path, timeout: float = NODE_TIMEOUT):
        self.command, self.out, self.err = command, log.with_suffix(".out"), log.with_suffix(".err")
        self.start, self.peak, self.killed = time.monotonic(), 0, None
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(list(map(str, command)), cwd=cwd, env=env, stdout=out, stderr=err,
                                            start_new_session=True)
        self.watcher = threading.Thread(target=self._watch, args=(timeout,), daemon=True)
        self.watcher.start()

    def _watch(self, timeout: float) -> None:
        while self.process.poll() is None:
            rss = group_rss(self.process.pid)
            self.peak = max(self.peak, rss)
            if rss > MEMORY_LIMIT:
                self.kill(f"held {rss / 2**30:.1f} GiB (limit {MEMORY_LIMIT / 2**30:.0f})")
            elif time.monotonic() - self.start > timeout:
                self.kill(f"ran past {timeout:.0f}s")
            time.sleep(0.5)

    def kill(self, why: str = "stopped") -> None:
        if self.process.poll() is None:
            self.killed = why
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def wait(self) -> subprocess.CompletedProcess:
        """Waits for the command's end; fails the test if it was killed."""
        self.process.wait()
        self.watcher.join()
        result = subprocess.CompletedProcess(self.command, self.process.returncode, self.out.read_text(),
                                             self.err.read_text())
        if self.killed:
            pytest.fail(f"{' '.join(map(str, self.command[:3]))} ... killed: {self.killed}; "
                        f"peak {self.peak / 2**20:.0f} MiB:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}",
                        pytrace=False)
        return result

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's own error line (Vulkan and SwiftShader print warnings of their own on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: generate: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# ---- each submodule: WebGPU against the CPU library ---------------------------------------------------------


class Calls:
    """Collects function calls: inputs written as raw files for run_functions.mjs, the output of the CPU build of
    the library of `compute` (float32 `unet`, float16 `unet-f16`) computed here."""

    def __init__(self, variant: Path, folder: Path, compute: str = "float32"):
        self.variant, self.folder, self.compute = variant, folder, compute
        self.libraries: dict[str, Compiled] = {}
        self.float32: dict[str, Compiled] = {}
        self.reference: dict[str, np.ndarray] = {}
        self.spec: list[dict] = []
        self.expected: dict[str, np.ndarray] = {}
        self.chosen: dict[str, str] = {}  # the library the runtime chose per submodule (after the run)

    def add(self, key: str, sub: str, fn: str, *inputs: np.ndarray, index: int | None = None) -> None:
        """A call of `sub`'s function `fn`; `index` picks one element of a function's tuple of outputs."""
        if sub not in self.libraries:
            from lib.cli import library_name

            self.libraries[sub] = Compiled(self.variant, library_name(sub, self.compute))
        entries = []
        for i, array in enumerate(inputs):
            array = np.asarray(array, order="C")  # not ascontiguousarray: it turns 0-d into 1-d
            path = self.folder / f"{key}.in{i}.bin"
            path.write_bytes(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
            entries.append({"file": str(path), "dtype": str(array.dtype), "shape": list(array.shape)})
        self.spec.append({"sub": sub, "fn": fn, "inputs": entries, "out": str(self.folder / f"{key}.out.bin"),
                          **({} if index is None else {"index": index})})
        pick = (lambda out: out) if index is None else (lambda out: out[index])
        self.expected[key] = pick(self.libraries[sub](fn, *inputs))
        if self.compute != "float32":  # and what the float32 library makes of the same inputs
            self.float32.setdefault(sub, Compiled(self.variant, sub))
            self.reference[key] = pick(self.float32[sub](fn, *inputs))


def text_encoder_calls(calls: Calls, build, prefix: str = "") -> None:
    """Each text encoder of the build's family on the test prompts, both rows kept; a pooled encoder's two
    outputs as two calls (`<sub>.0`, `<sub>.1`)."""
    from transformers import CLIPTokenizer

    keep = np.ones(2, np.float32)
    for sub in family(build.model).text_encoders:
        tokenizer = CLIPTokenizer.from_pretrained(build.weights / sub.tokenizer)
        ids = tokenizer(list(PROMPTS), padding="max_length", max_length=77, truncation=True,
                        return_tensors="np").input_ids.astype(np.int32)
        if sub.pooled:
            for i in range(2):
                calls.add(f"{prefix}{sub.name}.{i}", sub.name, sub.name, ids, keep, index=i)
        else:
            calls.add(f"{prefix}{sub.name}", sub.name, sub.name, ids, keep)


def unet_inputs(specs: list[dict], rng, timestep: float, guidance: float) -> list[np.ndarray]:
    """Random inputs for a UNet function record's inputs (SDXL's time ids as the pipeline gives them)."""
    named = {spec["name"]: rng.standard_normal(spec["shape"], dtype=np.float32) for spec in specs}
    named["timestep"], named["guidance"] = np.array(timestep, np.float32), np.array(guidance, np.float32)
    if "time_ids" in named:
        named["time_ids"] = np.array([[128, 128, 0, 0, 128, 128]] * 2, np.float32)
    return [named[spec["name"]] for spec in specs]


@pytest.fixture(scope="module")
def function_runs(tiny_build, tmp_path_factory, request):
    """{family: a started run_functions.mjs over every function of its tiny model}: both run at once, in the
    background, beside the generations (which start first: they take longest)."""
    if any(item.originalname == "test_make_generate_matches_reference" for item in request.session.items):
        request.getfixturevalue("generations")

    runs = {}
    for fam in FAMILIES:
        build = tiny_build.of(fam)
        calls = Calls(build.variant, tmp_path_factory.mktemp(f"webgpu-functions-{fam}"))
        text_encoder_calls(calls, build)
        calls.libraries["unet"] = Compiled(build.variant, "unet")
        specs = calls.libraries["unet"].meta["functions"]["unet"]["inputs"]
        latent_shape = tuple(specs[0]["shape"])
        rng = np.random.default_rng(20)
        # An integer and a fractional (Euler) timestep; guidance 1 is the conditional prediction alone.
        for i, (timestep, guidance) in enumerate(((981.0, 7.5), (500.25, 1.0))):
            calls.add(f"unet{i}", "unet", "unet", *unet_inputs(specs, rng, timestep, guidance))
        calls.add("vae", "vae", "vae", rng.standard_normal(latent_shape, dtype=np.float32))
        for terms in range(1, 6):
            coeffs = rng.standard_normal(terms).astype(np.float32)
            calls.add(f"lincomb{terms}", "sched", f"lincomb{terms}", coeffs,
                      *(rng.standard_normal(latent_shape, dtype=np.float32) for _ in range(terms)))
        runs[fam] = start_calls(build, calls, gpu_env(), "auto")
    try:
        yield runs
    finally:
        for run, _ in runs.values():
            run.kill()


@pytest.fixture(scope="module")
def functions(function_runs):
    """{family: {key: (WebGPU output, CPU output)}} for every call above, one node process (one model load) per
    family."""
    return {fam: finish_calls(*run) for fam, run in function_runs.items()}


def start_calls(build, calls: Calls, env: dict, compute: str):
    """Starts `calls` on WebGPU with run_functions.mjs (libraries chosen as `compute` says; each must be the
    one the CPU side ran); finish_calls waits for it."""
    folder = calls.folder
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps({"model": str(build.variant / "model.json"), "compute": compute,
                                     "calls": calls.spec}))
    run = Guarded(["node", "tests/python/js/run_functions.mjs", spec_path], cwd=build.tree, env=env,
                  log=folder / "run_functions")
    return run, calls


def finish_calls(run: Guarded, calls: Calls) -> dict:
    """-> {key: (WebGPU output, CPU output)}."""
    result = run.wait()
    assert result.returncode == 0, f"run_functions.mjs failed:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"run_functions.mjs on {report['adapter']}: {run.elapsed:.1f}s, peak {run.peak / 2**20:.0f} MiB")
    assert report["gpuErrors"] == [], report["gpuErrors"]
    # The libraries the runtime chose are those the CPU side ran (on SwiftShader, without shader-f16, "auto"
    # must pick float32 everywhere).
    assert {report["compute"][sub] for sub in calls.libraries} == {calls.compute}, report["compute"]
    calls.chosen = report["compute"]
    out = {}
    for call, meta in zip(calls.spec, report["outputs"]):
        key = Path(call["out"]).name.removesuffix(".out.bin")
        expected = calls.expected[key]
        assert (meta["dtype"], meta["shape"]) == (str(expected.dtype), list(expected.shape)), key
        ours = np.fromfile(call["out"], dtype=np.dtype(meta["dtype"]).newbyteorder("<")).reshape(meta["shape"])
        out[key] = (ours, expected)
    assert sorted(out) == sorted(calls.expected)
    return out


FLOAT_CALLS = {"sd15": ["clip"], "sdxl": ["clip", "clip2.0", "clip2.1"]}


@pytest.mark.parametrize("fam,key", [(f, k) for f in FAMILIES for k in FLOAT_CALLS[f] + [
    "unet0", "unet1", "lincomb1", "lincomb2", "lincomb3", "lincomb4", "lincomb5"]])
def test_float_function_matches_cpu(functions, fam, key):
    ours, expected = functions[fam][key]
    assert expected.dtype == np.float32
    assert np.isfinite(ours).all()
    assert expected.std() > 1e-3, "the CPU output is flat: the comparison would prove little"
    err = relative_error(ours, expected)
    assert err <= TOLERANCE, f"{key}: relative error {err:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("fam", FAMILIES)
def test_vae_rgba_matches_cpu(functions, fam):
    ours, expected = functions[fam]["vae"]
    # int32 in the compiled function (WGSL has no 8-bit integers), read as bytes.
    assert ours.dtype == expected.dtype and ours.dtype.itemsize == 4 and ours.ndim == 2
    ours_rgba = ours.view(np.uint8).reshape(*ours.shape, 4).astype(int)
    cpu_rgba = expected.view(np.uint8).reshape(*expected.shape, 4).astype(int)
    assert (ours_rgba[..., 3] == 255).all()
    assert cpu_rgba[..., :3].std() > 10, "the CPU image is flat: the comparison would prove little"
    diff = np.abs(ours_rgba - cpu_rgba)
    # A channel sitting on a rounding edge may round the other way on the GPU.
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


# ---- float16 libraries on an adapter with shader-f16 ---------------------------------------------------------

# The float16 WebGPU library's error against the float32 library may be this many times the error of the
# float16 library's CPU build on the same inputs: both round to float16 at the same points, in different orders
# of accumulation, so neither is the other's exact reference (measured on lavapipe: about 1x).
FLOAT16_ERROR_RATIO = 2.0


@pytest.fixture(scope="module")
def float16_runs(tiny_build, tmp_path_factory):
    """{family: (text encoder and UNet calls through the float16 libraries (compute "float16") on lavapipe, Mesa's
    CPU Vulkan driver, whose Dawn adapter has shader-f16 (make setup fetches it: tests/tools/fetch_lavapipe.sh),
    the libraries the runtime chose)}. The VAE is left to the CPU parity tests: lavapipe takes two minutes to
    compile its shaders."""
    if not LAVAPIPE_ICD.exists():
        pytest.skip(f"no {LAVAPIPE_ICD} (lavapipe with shader-f16); `make setup` fetches it")
    started = {}
    for fam in FAMILIES:
        build = tiny_build.of(fam)
        calls = Calls(build.variant, tmp_path_factory.mktemp(f"webgpu-float16-{fam}"), compute="float16")
        text_encoder_calls(calls, build)
        specs = Compiled(build.variant, "unet-f16").meta["functions"]["unet"]["inputs"]
        rng = np.random.default_rng(30)
        for i, (timestep, guidance) in enumerate(((981.0, 7.5), (500.25, 1.0))):
            calls.add(f"unet{i}", "unet", "unet", *unet_inputs(specs, rng, timestep, guidance))
        started[fam] = start_calls(build, calls, lavapipe_env(calls.folder), "float16")
    results = {}
    for fam, (run, calls) in started.items():
        outputs = finish_calls(run, calls)
        results[fam] = ({key: (*outputs[key], calls.reference[key]) for key in outputs}, calls.chosen)
    return results


@pytest.mark.parametrize("fam,key", [(f, k) for f in FAMILIES for k in FLOAT_CALLS[f] + ["unet0", "unet1"]])
def test_float16_function_matches_cpu(float16_runs, fam, key):
    ours, cpu16, float32 = float16_runs[fam][0][key]
    assert np.isfinite(ours).all()
    assert float32.std() > 1e-3, "the float32 output is flat: the comparison would prove little"
    cpu_error, our_error = relative_error(cpu16, float32), relative_error(ours, float32)
    print(f"{fam} {key}: float16 on WebGPU {our_error:.2e}, on the CPU {cpu_error:.2e} from float32")
    assert 0 < cpu_error < 0.1
    assert our_error <= FLOAT16_ERROR_RATIO * cpu_error, (our_error, cpu_error)


def test_sdxl_vae_stays_float32_where_float16_is_offered(float16_runs):
    """SDXL's VAE overflows in float16 (NaN or black images), so its family builds it in float32 only: on an
    adapter with shader-f16, asked for float16, the runtime runs every other submodule in float16 and the VAE
    in float32. SD 1.5's VAE has its float16 library."""
    assert float16_runs["sdxl"][1] == {"clip": "float16", "clip2": "float16", "unet": "float16", "vae": "float32",
                                       "sched": "float32"}
    assert float16_runs["sd15"][1]["vae"] == "float16"


# ---- the whole pipeline: make generate against make reference -------------------------------------------------

# One `make generate` per family, one image per scheduler: the images share one model load, so the shaders
# compile once per family (most of a run's time on SwiftShader).
GENERATIONS = {"sd15": ("pndm", "dpm", "euler"), "sdxl": ("euler", "dpm")}
STEPS = 3
SETTINGS = dict(PROMPT=PROMPTS[1], NEGATIVE=PROMPTS[0], SEED=4321, GUIDANCE=7.5)


@pytest.fixture(scope="module")
def generations(tiny_build, tmp_path_factory):
    """{family: (Guarded `make generate SCHEDULER="..."`, its PNG path with {scheduler})}, all started at once
    in the background: each node process compiles every shader, mostly on one core, so together they use the
    machine's cores."""
    folder = tmp_path_factory.mktemp("webgpu-generate")
    runs = {}
    try:
        for fam, schedulers in GENERATIONS.items():
            out = str(folder / f"{fam}-{{scheduler}}.png")
            command = make_command("generate", **tiny_build.variables(
                MODEL=fam, OUT=out, STEPS=STEPS, SCHEDULER=" ".join(schedulers), **SETTINGS))
            runs[fam] = (Guarded(command, cwd=tiny_build.tree, env=clean_env(), log=folder / fam), out)
        yield runs
    finally:
        for run, _ in runs.values():
            run.kill()


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.mark.parametrize("fam,scheduler", [(f, s) for f, schedulers in GENERATIONS.items() for s in schedulers])
def test_make_generate_matches_reference(tiny_build, generations, fam, scheduler):
    from PIL import Image

    import reference

    # make reference runs stages/reference.py's generate(); here in-process, while make generate runs.
    ref = reference.generate(tiny_build.of(fam).weights, prompt=SETTINGS["PROMPT"], negative=SETTINGS["NEGATIVE"],
                             seed=SETTINGS["SEED"], steps=STEPS, scheduler=scheduler,
                             guidance=SETTINGS["GUIDANCE"], model=fam)
    run, out = generations[fam]
    result = run.wait()
    assert result.returncode == 0, f"make generate failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    print(f"make generate {fam} ({', '.join(GENERATIONS[fam])}) {STEPS} steps: {run.elapsed:.1f}s after its "
          f"start, peak {run.peak / 2**20:.0f} MiB\n{result.stdout}")
    out = out.replace("{scheduler}", scheduler)
    with Image.open(out) as png:
        assert png.size == (ref.shape[1], ref.shape[0])
        assert (png.text["scheduler"], png.text["steps"], png.text["seed"]) == (scheduler, str(STEPS), "4321")
        ours = np.asarray(png.convert("RGB"))
    assert ref.std() > 10, "diffusers made a flat image: the comparison would prove nothing"
    assert ours.std() > 10, "WebGPU made a flat image"
    value = psnr(ours, ref)
    print(f"{fam} {scheduler}: PSNR {value:.1f} dB")
    assert value >= PSNR_MIN, f"{fam} {scheduler}: PSNR {value:.1f} dB < {PSNR_MIN}"


# ---- bad input -----------------------------------------------------------------------------------------------


def linked_copy(variant: Path, dest: Path) -> Path:
    """A copy of the variant's runtime files as symbolic links (cheap), which a test may then break by
    replacing or removing links."""
    manifest = json.loads((variant / "model.json").read_text())
    files = {"model.json", manifest["wasm"]["path"]}
    tokenizers = [rec for files in manifest["tokenizers"].values() for rec in files.values()]
    files |= {rec["path"] for rec in [*tokenizers, *manifest["schedulers"].values()]}
    for sub in manifest["submodules"].values():
        if sub.get("params"):
            cache = Path(sub["params"]["path"])
            files.add(str(cache))
            for shard in json.loads((variant / cache).read_text())["records"]:
                files.add(str(cache.parent / shard["dataPath"]))
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).symlink_to(variant / name)
    return dest


def rewrite(copy: Path, name: str, data: bytes) -> None:
    """Replaces the file `name` in a linked copy, and its size and sha256 in model.json."""
    (copy / name).unlink()
    (copy / name).write_bytes(data)
    manifest = json.loads((copy / "model.json").read_text())
    records = [manifest["wasm"], *(r for files in manifest["tokenizers"].values() for r in files.values()),
               *manifest["schedulers"].values(),
               *(s["params"] for s in manifest["submodules"].values() if s.get("params"))]
    (record,) = [r for r in records if r["path"] == name]
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (copy / "model.json").unlink()
    (copy / "model.json").write_text(json.dumps(manifest, indent=1))


def test_tensor_cache_the_library_does_not_take(tiny_build, tmp_path):
    copy = linked_copy(tiny_build.variant, tmp_path / "variant")
    cache_name = "clip/params.v1/tensor-cache.json"
    cache = json.loads((copy / cache_name).read_text())
    count = len(cache["metadata"]["param_names"])
    cache["metadata"]["param_names"].pop()  # a tensor the library takes is not in the cache
    rewrite(copy, cache_name, json.dumps(cache).encode())

    result = node(tiny_build.tree, "tests/python/js/run_functions.mjs", _empty_spec(copy, tmp_path), timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: FormatError: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    first = lines[0]
    assert f"{count - 1} tensors for clip, the library's clip takes {count}; rebuild the model" in first
    assert str(copy / cache_name) in first

    result = node(tiny_build.tree, "web/node/generate.mjs", "--model", copy / "model.json", "--steps", 1,
                  "--out", tmp_path / "never.png", timeout=120)
    assert result.returncode == 1
    assert "does not match the library" in error_line(result)
    assert "    at " not in result.stderr, "a stack trace instead of the message"
    assert not (tmp_path / "never.png").exists()


def _empty_spec(copy: Path, folder: Path) -> Path:
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"model": str(copy / "model.json"), "calls": []}))
    return spec


def test_missing_shard_is_named(tiny_build, tmp_path):
    copy = linked_copy(tiny_build.variant, tmp_path / "variant")
    cache = json.loads((copy / "unet/params.v1/tensor-cache.json").read_text())
    shard = copy / "unet/params.v1" / cache["records"][-1]["dataPath"]
    shard.unlink()
    start = time.monotonic()
    result = node(tiny_build.tree, "web/node/generate.mjs", "--model", copy / "model.json", "--steps", 1,
                  "--out", tmp_path / "never.png", timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert error_line(result) == f"error: generate: cannot read {shard} (ENOENT); build the model with make"
    assert "    at " not in result.stderr
    assert not (tmp_path / "never.png").exists()
    assert elapsed < 60, f"{elapsed:.0f}s to report a missing file"


def test_no_webgpu_adapter(tiny_build, tmp_path):
    start = time.monotonic()
    result = node(tiny_build.tree, "web/node/generate.mjs", "--model", tiny_build.variant / "model.json",
                  "--steps", 1, "--out", tmp_path / "never.png", timeout=60, VK_ICD_FILENAMES="/nonexistent.json")
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    line = error_line(result)
    # NoWebGPUError from web/runtime/load.js requestDevice.
    assert line.startswith("error: generate: WebGPU is present but no GPU adapter is available"), line
    assert "Update the graphics driver" in line
    assert not (tmp_path / "never.png").exists()
    assert elapsed < 20, f"{elapsed:.0f}s to report that there is no adapter"


@pytest.mark.parametrize("args, expected", [
    (["--scheduler", "pndm,dpm", "--out", "never.png"],
     "error: generate: 2 schedulers make 2 images: give --out a {scheduler} placeholder, e.g. out-{scheduler}.png"),
    (["--scheduler", "pndm,ddim", "--out", "never-{scheduler}.png"],
     'error: generate: sd15-tiny (sd15) has no scheduler "ddim"; use one of'),
    (["--sampler", "pndm"], "error: generate: Unknown option '--sampler'"),
], ids=["several-without-placeholder", "one-of-several-unknown", "unknown-option"])
def test_cli_settings_refused_before_load(tiny_build, tmp_path, args, expected):
    """Settings the CLI cannot carry out end it before the model loads: one line, nothing written."""
    result = node(tmp_path, tiny_build.tree / "web/node/generate.mjs", "--model", tiny_build.variant / "model.json",
                  *args, timeout=30)
    assert result.returncode == 1
    assert error_line(result).startswith(expected), result.stderr
    assert "adapter:" not in result.stdout  # refused before loading
    assert list(tmp_path.iterdir()) == []


def test_cli_help(tiny_build):
    result = node(tiny_build.tree, "web/node/generate.mjs", "--help", timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: node web/node/generate.mjs --model")

"""Incremental builds: make reruns exactly the stages whose inputs changed, and an interrupted build leaves
no half-written artifact behind.

    .venv/bin/python -m pytest tests/python/test_build_incremental.py -q

Each test copies the session's tiny build (conftest: `cp -a` keeps mtimes) into its own ARTIFACTS folder,
changes one input there and runs `make sd15 WEIGHTS=tiny` on the copy. What ran is read three ways: the
stage lines make prints (`  TUNE  <dir>`), the lines the stages append to build.log, and the mtimes of the
files (a stage that ran but wrote identical bytes keeps the old file). Nothing in the repository is touched:
the changes are made to the copy's weights and tuning logs, never to stages/.

`make -n` and `make -q` answer from the files' times: they list (or count) the stages whose inputs are newer
than their stamps, and a stage that ran without changing its output is not taken for one that will (the
Makefile's RESTAT). What follows such a stage depends on the bytes it will write, which only a real run knows:
a real run with PY=false answers that (any stage that would run fails).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (FAMILIES, LIBRARIES, MODEL, Compiled, clean_env, log_entries, make_command, relative_error,
                      snapshot, stage_lines, stored_weights)
from lib.cli import ArtifactPaths
from lib.models import family

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


# Stages that combine every submodule's outputs (the linked .wasm, the manifest): they follow any change of a
# submodule's outputs, so a test that changes one submodule allows them and nothing else outside it.
AGGREGATE_STAGES = {"LINK", "MANIFEST"}
AGGREGATE_LOG = {"link", "manifest"}
LINK_STAMP = ".link.stamp"  # the Makefile's stamp for the link step, under artifacts/<variant>/
SUBMODULE_FOLDERS = LIBRARIES  # each library has a folder of its own (unet, unet-f16)
VARIANT_INPUT_FOLDERS = ("weights", "scheduler.v1", "tokenizer.v1")


def ran(output: str, variant: Path) -> tuple[list[str], list[str]]:
    """What make ran, from its stage lines: (per-submodule runs as 'STAGE sub [target]', sorted; the other
    stage names, sorted)."""
    per_submodule, others = [], []
    for line in stage_lines(output):
        stage, path, *rest = line.split()
        if Path(path).parent == variant and Path(path).name in SUBMODULE_FOLDERS:
            per_submodule.append(" ".join([stage, Path(path).name, *rest]))
        else:
            others.append(stage)
    return sorted(per_submodule), sorted(others)


def new_log_entries(variant: Path, before: list) -> tuple[list, set]:
    """build.log lines appended since `before`: (per-submodule (stage, sub) pairs, sorted; other stages)."""
    after = log_entries(variant)
    assert after[: len(before)] == before, "build.log was rewritten, not appended to"
    new = after[len(before):]
    return sorted(e for e in new if e[1] != "-"), {stage for stage, sub in new if sub == "-"}


def under(changed: set[str], *folders: str) -> set[str]:
    """The changed paths under any of `folders` (relative to the variant)."""
    return {p for p in changed if p.split("/")[0] in folders}


def changed_files(before: dict, after: dict) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def unet_inputs(seed: int, config: dict):
    rng = np.random.default_rng(seed)
    size = config["sample_size"]
    return (rng.standard_normal((1, config["in_channels"], size, size), dtype=np.float32),
            np.array(801.0, np.float32),
            rng.standard_normal((2, 77, config["cross_attention_dim"]), dtype=np.float32),
            np.array(7.5, np.float32))


def torch_unet(weights_dir: Path, inputs, cache_meta: dict) -> np.ndarray:
    """The PyTorch UNet with the weights as the tensor cache described by `cache_meta` stores them."""
    from diffusers import UNet2DConditionModel

    from lib.submodules.unet import GuidedUNet

    unet = stored_weights(UNet2DConditionModel.from_pretrained(weights_dir / "unet").eval(), cache_meta)
    wrapper = GuidedUNet(unet, 1).eval()
    with torch.no_grad():
        return wrapper(*(torch.from_numpy(np.asarray(x)) for x in inputs)).numpy()


# ---- no change, no work ------------------------------------------------------------------------------------


def dry_run_stages(output: str) -> list[str]:
    """The stage commands a `make -n` printed, as 'stage submodule' (or 'stage -' for a per-variant one), sorted."""
    found = re.findall(r"stages/(\w+)\.py --variant-dir \S+(?: --submodule (\S+))?", output)
    return sorted(f"{stage} {sub or '-'}" for stage, sub in found)


def test_second_make_runs_no_stage(build_copy):
    build = build_copy()
    before_files, before_log = snapshot(build.variant), (build.variant / "build.log").read_bytes()
    result = build.make(MODEL)
    assert result.returncode == 0, result.stderr
    assert stage_lines(result.stdout) == [], "a second make ran stages"
    assert "up to date" in result.stdout
    assert (build.variant / "build.log").read_bytes() == before_log
    assert changed_files(before_files, snapshot(build.variant)) == set(), "a no-op make touched files"

    # Asked, make says so too: a dry run lists no stage, and -q finds nothing to do (though the build's stages
    # have left many outputs older than their stamps: the tiny weights, rewritten unchanged, are older than theirs).
    dry = build.make(MODEL, "-n")
    assert dry.returncode == 0, dry.stderr
    assert dry_run_stages(dry.stdout) == [], dry.stdout
    assert "make -n listed the stages that would start" in dry.stdout
    assert build.make(MODEL, "-q").returncode == 0

    # A changed option shows up in a dry run as every library's transform (WINOGRAD), and the dry run changes
    # nothing.
    switched = build.make(MODEL, "-n", WINOGRAD=0)
    assert switched.returncode == 0, switched.stderr
    assert sorted(re.findall(r"--submodule (\S+) --winograd 0", switched.stdout)) == sorted(LIBRARIES)
    assert changed_files(before_files, snapshot(build.variant)) == set(), "make -n changed files"


def test_up_to_date_check_with_failing_stages(build_copy):
    """PY=false makes every stage command fail: a build that needs no stage still succeeds, one that needs
    a stage does not (the check can tell the two apart)."""
    build = build_copy()
    up_to_date = build.make(MODEL, PY="false")
    assert up_to_date.returncode == 0, up_to_date.stderr
    assert stage_lines(up_to_date.stdout) == []

    (build.variant / "sched" / "lib.cpu.v1.so").unlink()
    stale = build.make(MODEL, PY="false")
    assert stale.returncode != 0
    assert ran(stale.stdout, build.variant) == (["EXPORT-LIB sched cpu"], [])


# ---- a changed tuning log ------------------------------------------------------------------------------------

GUIDANCE_KERNEL = re.compile(r"fused_split\d*_subtract\d*_multiply\d*_add\d*")  # named for the ops TVM fused


def workgroup_size(tar_path: Path, kernel: str) -> int:
    """The @workgroup_size of `kernel` in the WGSL that the WebGPU library (<variant>/unet/lib.webgpu.v1.tar)
    carries; its entry points are named after the family's system-library prefix."""
    prefix = family(ArtifactPaths(tar_path.parents[1]).family).system_lib_prefix("unet")
    pattern = re.compile(rb"@workgroup_size\((\d+), 1, 1\)\s*fn " + prefix.encode() + kernel.encode() + rb"_kernel\(")
    with tarfile.open(tar_path) as tar:
        found = [int(m.group(1)) for member in tar.getmembers()
                 for m in pattern.finditer(tar.extractfile(member).read())]
    assert len(found) == 1, f"{kernel}: {len(found)} WGSL entry points in {tar_path}"
    return found[0]


def guidance_kernel(lowered) -> str:
    """The UNet's last kernel, uncond + g * (cond - uncond): small, and surely compiled for WebGPU."""
    import tvm

    names = [gv.name_hint for gv, f in lowered.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and GUIDANCE_KERNEL.fullmatch(gv.name_hint)]
    assert len(names) == 1, f"expected one guidance kernel, found {names}"
    return names[0]


def write_tuning_log(lowered, kernel: str, out_dir: Path, threads: int) -> None:
    """A MetaSchedule JSONDatabase holding one tuning record: `kernel` inlined into one loop nest and bound
    with `threads` threads per workgroup. Built as MetaSchedule does: the workload is the normalized PrimFunc
    (what MetaScheduleApplyDatabase looks records up by), the record is the schedule's trace."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from lib.targets import target

    func = lowered[kernel]
    workload = _normalize_mod(func)
    sch = tvm.s_tir.Schedule(workload)
    root = sch.get_sblock("root")
    (output,) = sch.get_output_blocks(root)
    for block in sch.get_child_blocks(root):
        if sch.get(block).name_hint != sch.get(output).name_hint:
            sch.compute_inline(block)
    bx, tx = sch.split(sch.fuse(*sch.get_loops(output)), [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")

    out_dir.mkdir(parents=True)
    database = ms.database.JSONDatabase(str(out_dir / "database_workload.json"),
                                        str(out_dir / "database_tuning_record.json"), allow_missing=True)
    record = ms.database.TuningRecord(sch.trace, database.commit_workload(workload), run_secs=[1e-5],
                                      target=target("webgpu"), args_info=ArgInfo.from_prim_func(func))
    database.commit_tuning_record(record)
    assert len(database) == 1


@pytest.mark.parametrize("fam", FAMILIES)
def test_changed_unet_tuning_log_rebuilds_only_unet_webgpu(build_copy, tmp_path, fam):
    """The link that follows (a minute, even for the tiny model) is held back with `make -o`; a PY=false run
    shows it is due, and it alone."""
    import tvm
    import tvm_ffi

    from lib.relax_io import load_module

    other = next(f for f in FAMILIES if f != fam)
    build = build_copy(model=fam, also=[other])
    other_variant = build.of(other).variant
    other_before = snapshot(other_variant)
    unet = build.variant / "unet"
    tar, scheduled = unet / "lib.webgpu.v1.tar", unet / "scheduled.webgpu.v1.json"
    old_tar = tar.read_bytes()
    old_module, _ = load_module(scheduled, "make")
    lowered, _ = load_module(unet / "lowered.v1.json", "make")
    kernel = guidance_kernel(lowered)
    threads = 64 if workgroup_size(tar, kernel) != 64 else 32  # not what dlight chose
    tuning = tmp_path / "tuning"
    write_tuning_log(lowered, kernel, tuning / fam / "unet", threads)

    hold_link = ("-o", str(build.variant / LINK_STAMP))
    before_files, before_log = snapshot(build.variant), log_entries(build.variant)
    result = build.make(*FAMILIES, *hold_link, TUNING=tuning)
    assert result.returncode == 0, result.stderr
    per_submodule, others = ran(result.stdout, build.variant)
    assert per_submodule == ["EXPORT-LIB unet webgpu", "TUNE unet"] and set(others) <= AGGREGATE_STAGES
    logged, logged_others = new_log_entries(build.variant, before_log)
    assert logged == [("export-lib", "unet"), ("tune", "unet")] and logged_others <= AGGREGATE_LOG
    changed = changed_files(before_files, snapshot(build.variant))
    assert under(changed, "clip", "vae", "sched", *VARIANT_INPUT_FOLDERS) == set()
    assert {"unet/lib.webgpu.v1.tar", "unet/scheduled.webgpu.v1.json"} <= changed
    for untouched in ("lib.cpu.v1.so", "lowered.v1.json", "traced.v1.json", "params.v1/tensor-cache.json"):
        assert f"unet/{untouched}" not in changed

    # The record, and nothing else, changed the schedule, and it reached the WebGPU library.
    new_module, _ = load_module(scheduled, "make")
    # Kernels only: Relax functions (unet, unet_prepare) refer to kernels by GlobalVar, which differ by identity
    # between two loaded modules.
    differ = [gv.name_hint for gv, f in old_module.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and not tvm_ffi.structural_equal(f, new_module[gv.name_hint])]
    assert differ == [kernel]
    assert tar.read_bytes() != old_tar
    assert workgroup_size(tar, kernel) == threads
    if any(p.endswith(".wasm") for p in before_files):  # the page's .wasm must be relinked with the new objects
        due = build.make(*FAMILIES, TUNING=tuning, PY="false")
        assert due.returncode != 0 and ran(due.stdout, build.variant) == ([], ["LINK"])

    # The same log, touched: a dry run says tune will run; tune reruns, writes nothing new, and export-lib
    # does not follow.
    after_tuning = snapshot(build.variant)
    for f in (tuning / fam / "unet").iterdir():
        os.utime(f)
    dry = build.make(*FAMILIES, "-n", *hold_link, TUNING=tuning)
    assert dry.returncode == 0 and dry_run_stages(dry.stdout) == ["tune unet"], dry.stdout
    touched = build.make(*FAMILIES, *hold_link, TUNING=tuning)
    assert touched.returncode == 0, touched.stderr
    assert ran(touched.stdout, build.variant) == (["TUNE unet"], [])
    assert changed_files(after_tuning, snapshot(build.variant)) == {"unet/.tune.stamp", "build.log"}

    again = build.make(*FAMILIES, *hold_link, TUNING=tuning)
    assert again.returncode == 0 and stage_lines(again.stdout) == []
    assert dry_run_stages(build.make(*FAMILIES, "-n", *hold_link, TUNING=tuning).stdout) == []

    # The log removed (no file time shows that): tune reruns for the UNet alone, and the default schedule comes
    # back, compiled to the very library the build had before the log.
    shutil.rmtree(tuning / fam / "unet")
    dry = build.make(*FAMILIES, "-n", *hold_link, TUNING=tuning)
    assert dry.returncode == 0 and dry_run_stages(dry.stdout) == ["tune unet"], dry.stdout
    removed = build.make(*FAMILIES, *hold_link, TUNING=tuning)
    assert removed.returncode == 0, removed.stderr
    per_submodule, others = ran(removed.stdout, build.variant)
    assert per_submodule == ["EXPORT-LIB unet webgpu", "TUNE unet"] and set(others) <= AGGREGATE_STAGES
    assert tar.read_bytes() == old_tar
    assert snapshot(other_variant) == other_before, f"make {' '.join(FAMILIES)} changed {other}'s files"


def test_winograd_option_reruns_transform_and_nothing_before_it(build_copy):
    """WINOGRAD=0 is a transform option: switching it makes every library's transform due, and nothing upstream (with
    PY=false standing in for the stages, -k shows every stage that is due and can start)."""
    build = build_copy()
    due = build.make(MODEL, "-k", WINOGRAD="0", PY="false")
    assert due.returncode != 0
    assert ran(due.stdout, build.variant) == ([f"TRANSFORM {lib}" for lib in sorted(LIBRARIES)], [])
    assert (build.variant / ".option-winograd").read_text() == "0\n"


# ---- new weights, same architecture -----------------------------------------------------------------------


def test_new_unet_weights_rerun_only_unet_dump_params(build_copy):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    build = build_copy()
    (weights_file,) = (build.weights / "unet").glob("*.safetensors")
    config = json.loads((build.weights / "unet" / "config.json").read_text())
    inputs = unet_inputs(5, config)
    old_output = Compiled(build.variant, "unet")("unet", *inputs)

    # Same config, other values (a seed make_weights does not use: it seeds each part with 0, 1, 2...); only the
    # safetensors file is rewritten (save_pretrained would rewrite config.json too, and trace reads that).
    torch.manual_seed(12345)
    fresh = UNet2DConditionModel.from_config(config)
    save_file({k: v.contiguous() for k, v in fresh.state_dict().items()}, str(weights_file), metadata={"format": "pt"})

    before_files, before_log = snapshot(build.variant), log_entries(build.variant)
    result = build.make(MODEL)
    assert result.returncode == 0, result.stderr
    per_submodule, others = ran(result.stdout, build.variant)
    assert per_submodule == ["DUMP-PARAMS unet"] and set(others) <= AGGREGATE_STAGES
    logged, logged_others = new_log_entries(build.variant, before_log)
    assert logged == [("dump-params", "unet")] and logged_others <= AGGREGATE_LOG
    changed = changed_files(before_files, snapshot(build.variant))
    assert under(changed, "clip", "vae", "sched", "scheduler.v1", "tokenizer.v1") == set()
    assert "unet/params.v1/tensor-cache.json" in changed
    assert {p for p in under(changed, "unet") if not p.startswith(("unet/params.v1", "unet/.params.stamp"))} == set()

    # The compiled UNet (unchanged library, new tensor cache) is the PyTorch UNet with the new weights.
    compiled = Compiled(build.variant, "unet")
    new_output = compiled("unet", *inputs)
    assert relative_error(new_output, torch_unet(build.weights, inputs, compiled.cache_meta)) <= 1e-4
    assert relative_error(new_output, old_output) > 1e-2


# ---- interrupted builds -------------------------------------------------------------------------------------


def final_named_files_are_whole(variant: Path) -> None:
    """Every artifact under its final name parses: JSON, tar, shared library, tensor-cache shards (sha256)."""
    import tvm

    from lib.cli import sha256_file

    for path in variant.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(variant).parts) or not path.is_file():
            continue  # temporary names and stamps
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name.endswith(".tar"):
            with tarfile.open(path) as tar:
                assert tar.getmembers(), path
        elif path.suffix == ".so":
            tvm.runtime.load_module(str(path))
    for cache in variant.glob("*/params.v1/tensor-cache.json"):
        for shard in json.loads(cache.read_text())["records"]:
            assert sha256_file(cache.parent / shard["dataPath"]) == shard["sha256"], cache


def test_killed_build_leaves_no_half_written_artifact(build_copy, tiny_build, tmp_path):
    """make is killed (SIGKILL to its process group) while export-lib is writing the UNet's CPU library;
    no artifact is left half-written under its final name, no stamp claims the killed stage finished, and
    the next make completes the build."""
    build = build_copy()
    unet = build.variant / "unet"
    library, stamp = unet / "lib.cpu.v1.so", unet / ".export-cpu.stamp"
    library.unlink()  # so export-lib writes it anew...
    os.utime(build.weights / "unet" / "config.json")  # ...after trace has rerun for the UNet
    stamp_mtime = stamp.stat().st_mtime_ns

    log = tmp_path / "make.out"
    with open(log, "wb") as out:
        make = subprocess.Popen(make_command(MODEL, **build.variables()), cwd=build.tree, env=clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a timing check
        while not list(unet.glob(".lib.cpu.v1.so.*.tmp")):  # export-lib is writing into its temporary folder
            assert make.poll() is None, f"make ended before export-lib started writing:\n{log.read_text()}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait()
    output = log.read_text()
    assert make.returncode == -signal.SIGKILL
    # The scheduler functions take the UNet's config too; a parallel build may have retraced them meanwhile.
    per_submodule, others = ran(output, build.variant)
    assert [r for r in per_submodule if r != "TRACE sched"] == ["EXPORT-LIB unet cpu", "TRACE unet"] and others == []

    final_named_files_are_whole(build.variant)
    assert stamp.stat().st_mtime_ns == stamp_mtime, "the killed stage's stamp was written"
    leftovers = [p for p in unet.iterdir() if p.name.startswith(".lib.cpu.v1.so.")]
    assert all(p.name.endswith(".tmp") for p in leftovers), leftovers  # only temporary names
    assert build.make(MODEL, PY="false").returncode != 0, "the interrupted build passes for finished"

    resumed = build.make(MODEL)
    assert resumed.returncode == 0, resumed.stderr
    assert "EXPORT-LIB unet cpu" in ran(resumed.stdout, build.variant)[0]
    assert not list(unet.glob(".lib.cpu.v1.so.*.tmp")), "the killed writer's temporaries were not cleaned up"
    final_named_files_are_whole(build.variant)
    config = json.loads((build.weights / "unet" / "config.json").read_text())
    inputs = unet_inputs(6, config)
    assert relative_error(Compiled(build.variant, "unet")("unet", *inputs),
                          Compiled(tiny_build.variant, "unet")("unet", *inputs)) <= 1e-6
    assert stage_lines(build.make(MODEL).stdout) == []


# ---- stages/lib/cli.py: atomic, write-if-changed outputs ------------------------------------------------------


class Boom(Exception):
    pass


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_if_changed(tmp_path, monkeypatch):
    from lib import cli

    path = tmp_path / "out.json"
    assert cli.write_bytes_if_changed(path, b"one") is True
    mtime, inode = path.stat().st_mtime_ns, path.stat().st_ino
    assert cli.write_bytes_if_changed(path, b"one") is False
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == (mtime, inode)
    assert path.stat().st_mode & 0o777 == 0o666 & ~cli._UMASK  # served to browsers: not mkstemp's 0600

    real_fdopen = os.fdopen

    def fdopen_failing_mid_write(fd, mode):
        out = real_fdopen(fd, mode)

        class HalfWriter:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                out.close()

            def write(self, data):
                out.write(data[: len(data) // 2])
                out.flush()
                raise Boom

        return HalfWriter()

    monkeypatch.setattr(cli.os, "fdopen", fdopen_failing_mid_write)
    with pytest.raises(Boom):
        cli.write_bytes_if_changed(path, b"two, longer")
    monkeypatch.undo()
    assert path.read_bytes() == b"one" and entries(tmp_path) == ["out.json"]

    def replace_fails(src, dst):
        raise Boom

    monkeypatch.setattr(cli.os, "replace", replace_fails)
    with pytest.raises(Boom):
        cli.write_bytes_if_changed(path, b"three")
    monkeypatch.undo()
    assert path.read_bytes() == b"one" and entries(tmp_path) == ["out.json"]

    assert cli.write_bytes_if_changed(path, b"two") is True and path.read_bytes() == b"two"
    assert entries(tmp_path) == ["out.json"]


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    """A killed stage leaves `.<name>.<pid>.*.tmp` beside its output; the next writer of that output removes
    those whose process is gone (a pid above Linux's pid_max here) and leaves a live writer's alone."""
    from lib import cli

    path = tmp_path / "out.json"
    dead_file = tmp_path / ".out.json.999999999.abc.tmp"
    dead_dir = tmp_path / ".out.json.999999999.def.tmp"
    live = tmp_path / f".out.json.{os.getpid()}.ghi.tmp"
    other = tmp_path / ".other.json.999999999.jkl.tmp"
    dead_file.write_bytes(b"half")
    dead_dir.mkdir()
    (dead_dir / "out.json").write_bytes(b"half")
    live.write_bytes(b"being written")
    other.write_bytes(b"not ours")
    cli.write_bytes_if_changed(path, b"whole")
    assert entries(tmp_path) == sorted([live.name, other.name, "out.json"])


def test_file_if_changed(tmp_path):
    from lib import cli

    path = tmp_path / "lib.so"
    with cli.file_if_changed(path) as tmp:
        assert tmp.parent != tmp_path and tmp.name == path.name
        tmp.write_bytes(b"v1")
    assert path.read_bytes() == b"v1" and entries(tmp_path) == ["lib.so"]
    mtime = path.stat().st_mtime_ns

    with pytest.raises(Boom), cli.file_if_changed(path) as tmp:
        tmp.write_bytes(b"half of v2")
        raise Boom
    assert path.read_bytes() == b"v1" and entries(tmp_path) == ["lib.so"]

    with cli.file_if_changed(path) as tmp:
        tmp.write_bytes(b"v1")
    assert path.stat().st_mtime_ns == mtime, "identical bytes rewrote the file"

    with cli.file_if_changed(path) as tmp:
        tmp.write_bytes(b"v2")
    assert path.read_bytes() == b"v2" and entries(tmp_path) == ["lib.so"]


def test_dir_if_changed(tmp_path):
    from lib import cli

    path = tmp_path / "params.v1"
    with cli.dir_if_changed(path) as tmp:
        (tmp / "a.bin").write_bytes(b"a1")
        (tmp / "tensor-cache.json").write_text("{}")
    assert entries(path) == ["a.bin", "tensor-cache.json"] and entries(tmp_path) == ["params.v1"]
    inode = path.stat().st_ino

    with pytest.raises(Boom), cli.dir_if_changed(path) as tmp:
        (tmp / "a.bin").write_bytes(b"a2")
        raise Boom
    assert (path / "a.bin").read_bytes() == b"a1" and entries(path) == ["a.bin", "tensor-cache.json"]
    assert entries(tmp_path) == ["params.v1"]

    with cli.dir_if_changed(path) as tmp:
        (tmp / "a.bin").write_bytes(b"a1")
        (tmp / "tensor-cache.json").write_text("{}")
    assert path.stat().st_ino == inode, "an identical folder replaced the old one"

    with cli.dir_if_changed(path) as tmp:  # a file fewer is a change too
        (tmp / "tensor-cache.json").write_text("{}")
    assert entries(path) == ["tensor-cache.json"] and entries(tmp_path) == ["params.v1"]
    assert path.stat().st_mode & 0o444 == 0o444 & ~cli._UMASK  # readable as umask allows: not mkdtemp's 0700

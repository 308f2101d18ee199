"""site: assemble the static web site from web/, node_modules and built model variants. Builds nothing.

    python deploy/assemble_site.py --config web/local-config.json --out build/site [--artifacts artifacts]
        [--models "sd15-tiny sdxl-tiny"] [--params-base-url https://host/path --params-out build/params-upload]

Layout written (every path relative, so the folder works at / and under https://<user>.github.io/<repo>/):

    index.html                      web/app/index.html
    app/                            web/app/* (main.js, worker.js, cache.js, protocol.js, dev.js, style.css)
    runtime/                        web/runtime/**, bare npm imports rewritten to ../vendor/... (module workers
                                    have no import maps)
    vendor/                         the pinned npm bundles the runtime imports, copied from node_modules
    models/<variant>/               model.json and exactly the files it names (shards included), hard-linked
                                    from artifacts/<variant>/ when possible
    stable-diffusion-config.json    the given config, keeping only the models whose files are here (or that
                                    live at an absolute URL), each with its download size

With --params-base-url, a model's files (library, tokenizers, scheduler constants, weights) are laid out under
--params-out/<variant>/ instead, exactly as they are to be uploaded to that URL, and the site's model.json names
them by absolute URL (GitHub Pages takes no file over 100 MB and about 1 GB in all). Either way index.html's
Content-Security-Policy lets the page connect to its own origin and to the hosts its models live on, no other.

The folder is rebuilt from scratch (beside it, then swapped in), so nothing stale survives. `make site` runs
this; `make serve` serves the result; `make deploy-ghpages` (deploy/ghpages.py) publishes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FORMAT = "websd-site-config"
CONFIG_VERSION = 1
MANIFEST_FORMAT = "websd-model"
MANIFEST_VERSION = 3  # the version web/runtime/load.js reads (MANIFEST_VERSION there)

# Bare module specifiers used by web/runtime -> the file (in node_modules) that serves them in the browser.
VENDOR = {
    "@mlc-ai/web-runtime": ("@mlc-ai/web-runtime", "lib/index.js"),
    "@huggingface/tokenizers": ("@huggingface/tokenizers", "dist/tokenizers.min.mjs"),
}
LICENSE_FILES = ("LICENSE", "NOTICE")
IMPORT_RE = re.compile(r"""(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])([^"']+)\2""")


class SiteError(Exception):
    pass


def place(src: Path, dst: Path) -> None:
    """Hard link (instant, no extra disk for multi-GB weights) or copy. Build stages replace files by rename,
    so a link never sees a later build change under it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SiteError(f"{what} {path} is missing") from None
    except json.JSONDecodeError as err:
        raise SiteError(f"{what} {path} is not valid JSON: {err}") from None


def check_config(config: dict, path: Path) -> None:
    if config.get("format") != CONFIG_FORMAT or config.get("version") != CONFIG_VERSION:
        raise SiteError(f"{path}: expected format {CONFIG_FORMAT!r} version {CONFIG_VERSION}, "
                        f"found {config.get('format')!r} version {config.get('version')}")
    models = config.get("models")
    if not isinstance(models, list) or not models:
        raise SiteError(f"{path}: 'models' must be a non-empty list")
    for i, m in enumerate(models):
        for key in ("id", "label", "model_url"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise SiteError(f"{path}: model {i + 1} lacks {key!r}")


def variant_files(variant_dir: Path) -> tuple[dict, list[dict]]:
    """model.json and [{path, bytes, sha256}] of every file it names, shards included."""
    manifest = read_json(variant_dir / "model.json", "model manifest")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise SiteError(f"{variant_dir}/model.json is not a {MANIFEST_FORMAT} manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise SiteError(f"{variant_dir}/model.json is version {manifest.get('version')}, the page reads {MANIFEST_VERSION}; "
                        f"rebuild it with `make {manifest.get('family', 'sd15')} WEIGHTS=...`")
    files = [manifest["wasm"], *(rec for folder in manifest["tokenizers"].values() for rec in folder.values()),
             *manifest["schedulers"].values()]
    for sub in manifest["submodules"].values():
        files += [lib["subgroup_matrix"] for lib in sub["libraries"].values() if "subgroup_matrix" in lib]
        if "params" not in sub:
            continue
        files.append(sub["params"])
        cache_dir = Path(sub["params"]["path"]).parent
        cache = read_json(variant_dir / sub["params"]["path"], "tensor cache")
        files += [{"path": (cache_dir / shard["dataPath"]).as_posix(), "bytes": shard["nbytes"], "sha256": shard["sha256"]}
                  for shard in cache["records"]]
    return manifest, files


def add_model(out: Path, artifacts: Path, variant: str, params_base_url: str = "", params_out: Path | None = None) -> int:
    """Places artifacts/<variant>/ files under out/models/<variant>/ (or, with `params_base_url`, under
    params_out/<variant>/, the site's model.json naming them at params_base_url/<variant>/); returns the bytes a
    browser downloads."""
    src = artifacts / variant
    manifest, files = variant_files(src)
    dest = params_out / variant if params_base_url else out / "models" / variant
    for f in files:
        path = src / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"]:
            raise SiteError(f"{path} is missing or has the wrong size; rebuild with `make {manifest['family']} WEIGHTS=...`")
        place(path, dest / f["path"])
    if params_base_url:
        base = f"{params_base_url.rstrip('/')}/{variant}/"
        text = json.dumps(hosted_manifest(manifest, base), indent=1) + "\n"
        (out / "models" / variant).mkdir(parents=True, exist_ok=True)
        (out / "models" / variant / "model.json").write_text(text)
    else:
        place(src / "model.json", out / "models" / variant / "model.json")
    return sum(f["bytes"] for f in files)


def hosted_manifest(manifest: dict, base: str) -> dict:
    """`manifest` with every file it names at an absolute URL under `base` (shards follow their tensor-cache.json:
    the runtime resolves them against its URL). Sizes and sha256s stay: the page still checks every file."""
    def at(rec):
        return {**rec, "path": base + rec["path"]}
    return {
        **manifest,
        "wasm": at(manifest["wasm"]),
        "tokenizers": {folder: {name: at(rec) for name, rec in files.items()} for folder, files in manifest["tokenizers"].items()},
        "schedulers": {name: at(rec) for name, rec in manifest["schedulers"].items()},
        "submodules": {sub: {**rec, "libraries": {compute: ({**lib, "subgroup_matrix": at(lib["subgroup_matrix"])}
                                                            if "subgroup_matrix" in lib else lib)
                                                   for compute, lib in rec["libraries"].items()},
                             **({"params": at(rec["params"])} if "params" in rec else {})}
                       for sub, rec in manifest["submodules"].items()},
    }


def origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


def check_params_base_url(url: str) -> None:
    """https only, or http on this machine (tests, local serving): the page checks every file's sha256, but an
    http host would still let anyone on the path watch and block the downloads."""
    parsed = urlparse(url)
    local = parsed.hostname in ("localhost", "127.0.0.1", "::1")
    if parsed.scheme != "https" and not (parsed.scheme == "http" and local) or not parsed.netloc:
        raise SiteError(f"PARAMS_BASE_URL {url!r} must be an https:// URL (http:// only for localhost)")


def with_csp(html: str, hosts: list[str]) -> str:
    """index.html with connect-src narrowed to its own origin and `hosts` (the configured model hosts)."""
    pattern = re.compile(r"connect-src [^;\"]*")
    if not pattern.search(html):
        raise SiteError("web/app/index.html has no connect-src in its Content-Security-Policy")
    return pattern.sub("connect-src " + " ".join(["'self'", *sorted(set(hosts)), "blob:"]), html, count=1)


def rewrite_imports(text: str, depth: int, name: str) -> str:
    def repl(match):
        spec = match.group(3)
        if spec.startswith((".", "/")):
            return match.group(0)
        if spec not in VENDOR:
            raise SiteError(f"{name} imports {spec!r}, which the site does not vendor; add it to VENDOR in {Path(__file__).name}")
        package, file = VENDOR[spec]
        return f"{match.group(1)}{match.group(2)}{'../' * depth}vendor/{package}/{file}{match.group(2)}"
    return IMPORT_RE.sub(repl, text)


def add_code(out: Path, node_modules: Path) -> dict:
    app = ROOT / "web" / "app"
    for path in sorted(app.iterdir()):
        if path.is_file():
            shutil.copy2(path, out / ("index.html" if path.name == "index.html" else f"app/{path.name}"))
    runtime = ROOT / "web" / "runtime"
    for path in sorted(runtime.rglob("*.js")):
        rel = path.relative_to(runtime)
        dst = out / "runtime" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        # runtime/<rel>: depth of the file below the site root
        dst.write_text(rewrite_imports(path.read_text(), len(rel.parts), f"web/runtime/{rel}"))
    versions = {}
    for package, file in VENDOR.values():
        pkg = node_modules / package
        if not (pkg / file).is_file():
            raise SiteError(f"{pkg / file} is missing; run `make setup` (npm ci)")
        place(pkg / file, out / "vendor" / package / file)
        for lic in LICENSE_FILES:
            if (pkg / lic).is_file():
                place(pkg / lic, out / "vendor" / package / lic)
        versions[package] = json.loads((pkg / "package.json").read_text())["version"]
    (out / "vendor" / "VERSIONS.json").write_text(json.dumps(versions, indent=1) + "\n")
    return versions


def assemble(config_path: Path, out: Path, artifacts: Path, models: str = "", *, node_modules: Path = ROOT / "node_modules",
             params_base_url: str = "", params_out: Path | None = None, require_built: bool = False) -> list[dict]:
    """Writes the site to `out` (and the model files to `params_out` with `params_base_url`); returns the kept
    config entries. `require_built`: a model named in `models` that is not built is an error, not a note."""
    config = read_json(config_path, "site config")
    check_config(config, config_path)
    wanted = set(re.split(r"[\s,]+", models.strip())) - {""}
    unknown = wanted - {m["id"] for m in config["models"]}
    if unknown:
        raise SiteError(f"models {', '.join(sorted(unknown))} are not in {config_path}")
    if params_base_url:
        check_params_base_url(params_base_url)
        if params_out is None:
            raise SiteError("a parameter host URL needs a folder to lay its files out in (--params-out)")

    tmp = out.with_name(out.name + ".tmp")
    params_tmp = params_out.with_name(params_out.name + ".tmp") if params_base_url else None
    try:
        return _assemble(config, config_path, tmp, out, artifacts, wanted, node_modules, params_base_url, params_tmp,
                         params_out, require_built)
    finally:  # an error half-way leaves nothing half-written behind
        for folder in (tmp, params_tmp):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _assemble(config, config_path, tmp, out, artifacts, wanted, node_modules, params_base_url, params_tmp,
              params_out, require_built):
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "app").mkdir(parents=True)
    versions = add_code(tmp, node_modules)
    if params_tmp is not None:
        shutil.rmtree(params_tmp, ignore_errors=True)
        params_tmp.mkdir(parents=True)

    kept, hosts = [], [origin(params_base_url)] if params_base_url else []
    for m in config["models"]:
        if wanted and m["id"] not in wanted:
            continue
        url = m["model_url"]
        local = re.fullmatch(r"models/([A-Za-z0-9._-]+)/model\.json", url)
        if local is None:
            if not url.startswith("https://"):
                raise SiteError(f"{config_path}: {m['id']}: model_url {url!r} must be models/<variant>/model.json or an https URL")
            kept.append(m)  # hosted elsewhere; the deployment makes sure it is there
            hosts.append(origin(url))
            print(f"  {m['id']:<12} {url} (not copied: absolute URL)")
            continue
        variant = local.group(1)
        if not (artifacts / variant / "model.json").is_file():
            fix = f"make {variant.split('-')[0]} WEIGHTS=..."
            if require_built and m["id"] in wanted:
                raise SiteError(f"model {m['id']} is not built ({artifacts / variant}/model.json is missing): {fix}")
            print(f"  {m['id']:<12} skipped: {artifacts / variant}/model.json is not built ({fix})")
            continue
        size = add_model(tmp, artifacts, variant, params_base_url, params_tmp)
        kept.append({**m, "download_bytes": size})
        print(f"  {m['id']:<12} {url} ({size / 2**20:.1f} MiB{', files at ' + params_base_url if params_base_url else ''})")
    if not kept:
        raise SiteError(f"none of the models in {config_path} is built; build one, e.g. `make sd15 WEIGHTS=tiny`")
    site_config = {**config, "models": kept}
    if site_config.get("default_model") not in {m["id"] for m in kept}:
        site_config["default_model"] = kept[0]["id"]
    (tmp / "stable-diffusion-config.json").write_text(json.dumps(site_config, indent=1) + "\n")
    (tmp / ".nojekyll").write_text("")  # GitHub Pages: serve the files as they are
    (tmp / "index.html").write_text(with_csp((tmp / "index.html").read_text(), hosts))

    swap_in(tmp, out)
    if params_tmp is not None:
        swap_in(params_tmp, params_out)
    count = sum(1 for p in out.rglob("*") if p.is_file())
    digest = hashlib.sha256((out / "stable-diffusion-config.json").read_bytes()).hexdigest()[:12]
    print(f"site: {count} files, {len(kept)} model(s), config {config_path.name} ({digest}), "
          f"vendor {', '.join(f'{k} {v}' for k, v in versions.items())} -> {out}")
    return kept


def swap_in(tmp: Path, out: Path) -> None:
    """`tmp` becomes `out`; whatever was there goes (nothing stale survives, nothing half-written shows)."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="web/local-config.json or web/gh-page-config.json")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "node_modules")
    parser.add_argument("--models", default="",
                        help="model ids to keep, separated by spaces or commas (default: every one that is built)")
    parser.add_argument("--params-base-url", default="", help="where the model files will be hosted (https)")
    parser.add_argument("--params-out", type=Path, help="the folder to lay them out in, for upload to that URL")
    args = parser.parse_args()
    assemble(args.config, args.out, args.artifacts, args.models, node_modules=args.node_modules,
             params_base_url=args.params_base_url, params_out=args.params_out)


if __name__ == "__main__":
    try:
        main()
    except SiteError as err:
        print(f"error: site: {err}", file=sys.stderr)
        sys.exit(1)

# A good run (make site):
#   sd15         skipped: artifacts/sd15/model.json is not built (make sd15 WEIGHTS=...)
#   sd15-tiny    models/sd15-tiny/model.json (28.6 MiB)
# site: 33 files, 1 model(s), config local-config.json (...), vendor @mlc-ai/web-runtime 0.27.0-dev0, ... -> build/site

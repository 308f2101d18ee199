"""deploy-ghpages: the assembled site as a commit on the gh-pages branch of a git remote; weights to a parameter host.

    python deploy/ghpages.py --remote URL_OR_PATH [--models "sd15 sdxl"] [--params-base-url https://...]
        [--params-out build/params-upload] [--config web/gh-page-config.json] [--artifacts artifacts]

`make deploy-ghpages GHPAGES_REMOTE=...` runs it. Steps, each stopping with one line naming the problem:
1. The remote answers (`git ls-remote`, with the user's own git credentials; nothing is stored in the site).
2. The site is assembled in build/ghpages-site (deploy/assemble_site.py): page, runtime, libraries, scheduler
   constants, tokenizers, .nojekyll, stable-diffusion-config.json. With --params-base-url every model file goes
   to --params-out instead, laid out as that URL expects; without it everything must fit GitHub Pages: no file
   over 100 MB, the branch under 1 GB.
3. The folder becomes one commit on top of the branch, made with git plumbing in a scratch repository (a
   temporary index, `git write-tree`, `git commit-tree`) and pushed. The same tree as the branch's last commit
   is not committed again: a deploy with nothing changed pushes nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assemble_site import ROOT, SiteError, assemble  # noqa: E402

BRANCH = "gh-pages"
# GitHub Pages: files over 100 MB are refused by a push; a published site should stay under 1 GB.
MAX_FILE_BYTES = int(os.environ.get("GHPAGES_MAX_FILE_BYTES", 100 * 10**6))
MAX_SITE_BYTES = int(os.environ.get("GHPAGES_MAX_SITE_BYTES", 10**9))


def git(*args, git_dir: Path | None = None, env: dict | None = None, check: bool = True) -> str:
    full = ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
    result = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SiteError(f"git {args[0]} failed: {last}")
    return result.stdout.strip()


def default_remote() -> str:
    try:
        return git("-C", str(ROOT), "remote", "get-url", "origin")
    except SiteError:
        raise SiteError("no GHPAGES_REMOTE given and this checkout has no 'origin' remote; "
                        "give one: make deploy-ghpages GHPAGES_REMOTE=<git url or path>") from None


def check_sizes(site: Path) -> int:
    """Total bytes of `site`; a SiteError naming the first file over the per-file limit, or the total."""
    total = 0
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SiteError(f"{path.relative_to(site)} is {size / 1e6:.0f} MB, over GitHub Pages' {MAX_FILE_BYTES / 1e6:.0f} MB "
                            f"per file; host the model files elsewhere: PARAMS_BASE_URL=https://... (README: Publish your own)")
        total += size
    if total > MAX_SITE_BYTES:
        raise SiteError(f"the site is {total / 1e6:.0f} MB, over GitHub Pages' {MAX_SITE_BYTES / 1e6:.0f} MB; host the model "
                        f"files elsewhere: PARAMS_BASE_URL=https://... (README: Publish your own)")
    return total


def publish(site: Path, remote: str, message: str) -> str | None:
    """Commits `site` onto the remote's gh-pages branch and pushes it; returns the new commit, or None when the
    branch already holds exactly this tree."""
    with tempfile.TemporaryDirectory(prefix="ghpages-") as scratch:
        repo = Path(scratch) / "repo.git"
        git("init", "--quiet", "--bare", str(repo))
        parent = None
        if git("ls-remote", "--heads", remote, BRANCH, check=True):
            git("fetch", "--quiet", "--depth=1", remote, f"refs/heads/{BRANCH}:refs/heads/{BRANCH}", git_dir=repo)
            parent = git("rev-parse", f"refs/heads/{BRANCH}", git_dir=repo)
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index"), "GIT_WORK_TREE": str(site)}
        git("add", "--all", "--force", ".", git_dir=repo, env=env)
        tree = git("write-tree", git_dir=repo, env=env)
        if parent and git("rev-parse", f"{parent}^{{tree}}", git_dir=repo) == tree:
            return None
        commit = git("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message, git_dir=repo)
        git("push", "--quiet", remote, f"{commit}:refs/heads/{BRANCH}", git_dir=repo)
        return commit


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote", default="", help="git URL or path (default: this checkout's origin)")
    parser.add_argument("--models", default="", help="model ids of the config to publish (default: every built one)")
    parser.add_argument("--params-base-url", default="", help="https URL the model files will be uploaded to")
    parser.add_argument("--params-out", type=Path, default=ROOT / "build" / "params-upload")
    parser.add_argument("--config", type=Path, default=ROOT / "web" / "gh-page-config.json")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--site", type=Path, default=ROOT / "build" / "ghpages-site")
    args = parser.parse_args()

    remote = args.remote or default_remote()
    if subprocess.run(["git", "ls-remote", "--heads", remote], capture_output=True).returncode != 0:
        raise SiteError(f"the git remote {remote!r} cannot be reached (or is not a repository); check the URL and your "
                        f"access, e.g. `git ls-remote {remote}`")
    kept = assemble(args.config, args.site, args.artifacts, args.models, params_base_url=args.params_base_url,
                    params_out=args.params_out, require_built=True)
    total = check_sizes(args.site)
    head = git("-C", str(ROOT), "rev-parse", "--short", "HEAD", check=False) or "unknown"
    commit = publish(args.site, remote, f"Publish {', '.join(m['id'] for m in kept)} (source {head})")
    if commit is None:
        print(f"deploy-ghpages: {remote} {BRANCH} already holds this site; nothing pushed")
    else:
        print(f"deploy-ghpages: {total / 1e6:.1f} MB as {commit[:12]} -> {remote} {BRANCH}")
    if args.params_base_url:
        size = sum(p.stat().st_size for p in args.params_out.rglob("*") if p.is_file())
        print(f"deploy-ghpages: upload {args.params_out}/ ({size / 1e6:.1f} MB) so that it is served at "
              f"{args.params_base_url.rstrip('/')}/ with the header Access-Control-Allow-Origin (README: Publish your own)")


if __name__ == "__main__":
    try:
        main()
    except SiteError as err:
        print(f"error: deploy-ghpages: {err}", file=sys.stderr)
        sys.exit(1)

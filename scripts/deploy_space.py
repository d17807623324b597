"""Put this checkout on a Hugging Face Space (the Space is created if it does not exist).

    python scripts/deploy_space.py --repo USER/SPACE --dry-run   # what would be sent (offline)
    python scripts/deploy_space.py --repo USER/SPACE             # send it (HF_TOKEN or --token)

A Space fed by ``git push`` refuses files over 10 MB, and each shipped checkpoint is 13.5 MB;
``huggingface_hub.upload_folder`` stores large files the way the Hub wants by itself. The files
sent are chosen by ``huggingface_hub``'s own pattern filter, so ``--dry-run`` lists exactly what
an upload sends: the app, its packages and assets, README (the Space's settings), LICENSE and the
requirements, and none of the virtual environment, caches, secrets, tests or benchmarks.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_core.export import HubPushError, push_to_hub, valid_repo_id  # noqa: E402

# Patterns as huggingface_hub reads them (fnmatch; "*" crosses "/"; a trailing "/" means "all under").
IGNORE_PATTERNS = [
    ".git/", ".venv/", "venv/", ".env", "*.env", "*.pem", "*.key",
    "__pycache__/", "*/__pycache__/*", "*.pyc", ".pytest_cache/", "*/.pytest_cache/*",
    ".ruff_cache/", ".mypy_cache/", ".cache/", "build/", "dist/", "*.egg-info/*", "node_modules/",
    ".DS_Store", "*.log", ".ci/", ".github/", "tests/", "benchmarks/", "scripts/",
]
GIT_PUSH_LIMIT = 10 * 2**20  # bytes a plain git push to a Space accepts per file


def files_to_send(root: Path = ROOT) -> list[tuple[str, int]]:
    """(path relative to ``root``, size in bytes) of every file the upload sends, sorted."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(root).resolve()
    patterns = IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS

    def ignored(rel: str) -> bool:
        return not list(filter_repo_objects([rel], ignore_patterns=patterns))

    rel = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root).as_posix()
        prefix = "" if here == "." else here + "/"
        # skip whole folders the patterns drop anyway (a .venv holds ~100k files)
        dirs[:] = sorted(d for d in dirs if not ignored(f"{prefix}{d}/any-file"))
        rel += [prefix + n for n in names if (Path(folder) / n).is_file()]
    kept = filter_repo_objects(sorted(rel), ignore_patterns=patterns)
    return [(r, (root / r).stat().st_size) for r in kept]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} kB"


def describe(files: list[tuple[str, int]]) -> str:
    lines = [f"  {_size(size):>9}  {path}" + ("  (over git's 10 MB: uploaded as a large file)"
                                              if size > GIT_PUSH_LIMIT else "")
             for path, size in files]
    total = sum(size for _, size in files)
    lines.append(f"{len(files)} files, {_size(total)} ({total:,} bytes) in all")
    return "\n".join(lines)


def upload(repo_id: str, root: Path, token: str | None) -> str:
    """Create the Space if needed and upload the tree; returns the Space's address."""
    return push_to_hub(root, repo_id, token=token, repo_type="space", space_sdk="gradio",
                       ignore_patterns=list(IGNORE_PATTERNS), commit_message="Deploy LLM Explorer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="the Space, as USER/SPACE")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent and stop (no network)")
    parser.add_argument("--token", default=None, help="a Hugging Face write token (default: HF_TOKEN or your login)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests send a tree of their own
    args = parser.parse_args(argv)
    if not valid_repo_id(args.repo):
        print(f"--repo must look like USER/SPACE (got {args.repo!r})", file=sys.stderr)
        return 2
    files = files_to_send(args.root)
    print(f"{'Would send' if args.dry_run else 'Sending'} to the Space {args.repo}:")
    print(describe(files))
    if args.dry_run:
        return 0
    try:
        url = upload(args.repo, args.root, args.token)
    except HubPushError as exc:  # offline, no token, no rights: one line, not a traceback
        print(f"Upload failed: {exc.reason}", file=sys.stderr)
        return 1
    print(f"Done: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

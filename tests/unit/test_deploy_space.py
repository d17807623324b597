"""scripts/deploy_space.py: what it sends (the dry run, offline) and that a failed upload is one line."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def deploy():
    spec = importlib.util.spec_from_file_location("deploy_space", ROOT / "scripts" / "deploy_space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path):
    """A checkout in miniature: what a Space needs, and what it must never get."""
    sizes = {"app.py": 100, "README.md": 50, "requirements.txt": 20, "LICENSE": 30,
             "llm_core/model.py": 200, "tabs/chat.py": 70, "assets/models/m/model.safetensors": 11 * 2**20}
    junk = [".venv/lib/site.py", ".git/HEAD", ".env", "llm_core/__pycache__/model.cpython-311.pyc",
            "tests/unit/test_x.py", ".pytest_cache/v/cache", "benchmarks/b.py", "scripts/deploy_space.py",
            "build/lib/app.py", "llm_explorer.egg-info/PKG-INFO", "server.log"]
    for rel, size in sizes.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    for rel in junk:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("secret" if rel == ".env" else "junk")
    return tmp_path, sizes


def test_dry_run_lists_the_app_and_its_size_and_nothing_else(deploy, tree, capsys, monkeypatch):
    root, sizes = tree
    monkeypatch.setattr(deploy, "upload", lambda *a: pytest.fail("a dry run must not upload"))
    assert deploy.main(["--repo", "someone/llm-explorer", "--dry-run", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    listed = [line.split("  (over")[0].split()[-1] for line in out.splitlines()[1:-1]]
    assert sorted(listed) == sorted(sizes)
    total = sum(sizes.values())
    assert out.splitlines()[-1] == f"{len(sizes)} files, {total / 2**20:.1f} MB ({total:,} bytes) in all"
    assert "assets/models/m/model.safetensors  (over git's 10 MB" in out


def _reachable_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("llm_core.export.hub_reachable", lambda *a, **k: True)


def test_the_upload_sends_what_the_dry_run_lists(deploy, tree, monkeypatch, capsys):
    """The real path hands huggingface_hub the same patterns the dry run filtered with."""
    import huggingface_hub

    root, sizes = tree
    calls = {}

    def create_repo(repo_id, token, **kw):
        calls["token"], calls["create"] = token, (repo_id, kw)
        return f"https://huggingface.co/spaces/{repo_id}"  # what the Hub answers (a RepoUrl)

    def upload_folder(folder_path, repo_id, repo_type, ignore_patterns, **kw):
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
        every = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).glob("**/*") if p.is_file())
        calls["sent"] = sorted(filter_repo_objects(every, ignore_patterns=ignore_patterns + DEFAULT_IGNORE_PATTERNS))
        calls["upload"] = (repo_id, repo_type)

    _reachable_hub(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert deploy.main(["--repo", "someone/llm-explorer", "--root", str(root)]) == 0
    assert calls["token"] == "hf_test"
    assert calls["create"] == ("someone/llm-explorer", {"private": False, "repo_type": "space",
                                                        "space_sdk": "gradio", "exist_ok": True})
    assert calls["upload"] == ("someone/llm-explorer", "space")
    assert calls["sent"] == sorted(sizes)
    assert capsys.readouterr().out.splitlines()[-1] == "Done: https://huggingface.co/spaces/someone/llm-explorer"


def test_an_unreachable_hub_or_a_bad_repo_id_is_one_clear_line(deploy, tree, monkeypatch, capsys):
    import huggingface_hub

    root, _ = tree
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert deploy.main(["--repo", "someone/llm-explorer", "--root", str(root)]) == 1  # HF_HUB_OFFLINE=1
    assert capsys.readouterr().err == ("Upload failed: the Hugging Face Hub cannot be reached (offline?); "
                                       "nothing was pushed\n")

    def refused(*a, **kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nlong traceback text")

    _reachable_hub(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "create_repo", refused)
    assert deploy.main(["--repo", "someone/llm-explorer", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err == "Upload failed: pushing to someone/llm-explorer failed (Failed to resolve 'huggingface.co')\n"
    assert deploy.main(["--repo", "not a repo", "--dry-run", "--root", str(root)]) == 2
    assert "USER/SPACE" in capsys.readouterr().err


def test_the_real_checkout_sends_the_shipped_models_and_no_tests(deploy):
    sent = dict(deploy.files_to_send(ROOT))
    for needed in ("app.py", "README.md", "LICENSE", "requirements.txt", "assets/style.css",
                   "assets/models/pydoc-gpt/model.safetensors", "assets/models/pydoc-gpt-instruct/config.json"):
        assert needed in sent
    assert not [p for p in sent if p.startswith(("tests/", ".git/", ".venv/")) or p.endswith(".pyc")]

import pytest

from llm_core.files import atomic_dir, atomic_file, write_atomic


def test_write_atomic_replaces_and_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_dir_swaps_a_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "y").write_text("2")
    assert [p.name for p in target.iterdir()] == ["y"]
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "z").write_text("3")
            raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]

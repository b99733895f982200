import os
import stat

import pytest
import torch

from utils.atomic import atomic_path, atomic_torch_save, atomic_write_text, remove_stale_temporaries, stale_temporaries


def test_file_appears_only_when_complete(tmp_path):
    final = tmp_path / "sub" / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("partial")
        assert not final.exists()
        assert tmp.parent == final.parent and tmp.name != final.name
    assert final.read_text() == "partial"
    assert os.listdir(final.parent) == ["out.txt"]


def test_failure_leaves_neither_file_nor_temporary(tmp_path):
    final = tmp_path / "out.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            torch.save(torch.ones(3), tmp)
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text("x", tmp_path / "a.json")
        with atomic_path(tmp_path / "b.bin") as tmp:  # a writer that restricts its own file
            tmp.write_bytes(b"x")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o644


def test_overwrite_and_torch_roundtrip(tmp_path):
    path = tmp_path / "t.pt"
    atomic_torch_save({"a": torch.arange(3)}, path)
    atomic_torch_save({"a": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(4))


def test_torch_save_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    atomic_torch_save({"a": torch.arange(5)}, tmp_path / "one.pt")
    atomic_torch_save({"a": torch.arange(5)}, tmp_path / "one.pt.copy")
    data = (tmp_path / "one.pt").read_bytes()
    assert data == (tmp_path / "one.pt.copy").read_bytes()
    assert b".tmp" not in data and b"archive/data.pkl" in data


def test_stale_temporaries_of_killed_writers_are_found_and_removed(tmp_path):
    final = tmp_path / "0000-0.mp4"
    context = atomic_path(final)
    tmp = context.__enter__()  # a writer that dies before finishing never exits the context
    tmp.write_bytes(b"half")
    (tmp_path / "0001-0.mp4").write_bytes(b"other video")
    assert stale_temporaries(final) == [tmp]
    assert remove_stale_temporaries(final) == 1
    assert sorted(os.listdir(tmp_path)) == ["0001-0.mp4"]

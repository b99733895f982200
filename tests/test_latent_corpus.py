import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import utils.latent_corpus as lc


def latents(t: int, seed: int = 0, dtype=torch.bfloat16) -> torch.Tensor:
    return torch.randn(t, 4, 6, 10, generator=torch.Generator().manual_seed(seed)).to(dtype)


def read_chars() -> int:
    """Bytes this process has read through read() syscalls (memory-mapped pages do not count)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def test_write_then_read_round_trip_keeps_values_dtype_and_metadata(tmp_path):
    x = latents(12)
    path = lc.write_video(tmp_path, "vid_000", x, {"prompt": "a cat, surfing", "seed": 7, "backbone": "self_forcing"})
    assert path == tmp_path / "videos" / "vid_000.safetensors"
    assert lc.video_length(path) == 12
    chunk = lc.read_frames(path, 3, 11)
    assert chunk.dtype == torch.bfloat16 and chunk.shape == (8, 4, 6, 10)
    assert torch.equal(chunk, x[3:11])
    meta = lc.read_metadata(path)
    assert meta["prompt"] == "a cat, surfing" and json.loads(meta["seed"]) == 7
    assert meta["num_frames"] == "12" and json.loads(meta["frame_shape"]) == [4, 6, 10] and meta["dtype"] == "bfloat16"
    index = lc.read_index(tmp_path)
    assert index == {
        "vid_000": {
            "file": "videos/vid_000.safetensors",
            "num_frames": 12,
            "frame_shape": [4, 6, 10],
            "dtype": "bfloat16",
            "metadata": {"prompt": "a cat, surfing", "seed": "7", "backbone": "self_forcing"},
        }
    }
    assert lc.is_corpus(tmp_path) and lc.verify_video(path)


def test_same_content_gives_byte_identical_files_in_any_metadata_order(tmp_path):
    x = latents(5, seed=3)
    meta = {"prompt": "ein Kätzchen 🐈 \"surft\"\n", "seed": 11, "backbone": "longlive", "config_hash": "ab12"}
    a = lc.write_video(tmp_path / "a", "v", x, meta)
    b = lc.write_video(tmp_path / "b", "v", x, dict(reversed(list(meta.items()))))
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "index.json").read_bytes() == (tmp_path / "b" / "index.json").read_bytes()
    data = a.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert header_len % 8 == 0 and list(json.loads(data[8 : 8 + header_len])["__metadata__"]) == sorted(
        lc.read_metadata(a))
    assert lc.verify_video(a) and torch.equal(lc.read_frames(a, 0, 5), x)
    assert lc.read_metadata(a)["prompt"] == meta["prompt"]


def test_read_frames_out_of_range_names_the_file(tmp_path):
    path = lc.write_video(tmp_path, "v", latents(5), {})
    with pytest.raises(lc.CorpusError, match=r"v\.safetensors.*\[3, 6\)"):
        lc.read_frames(path, 3, 6)


def test_read_frames_reads_only_the_requested_bytes(tmp_path):
    x = torch.randn(200, 16, 30, 52)  # 20 MB float32
    path = lc.write_video(tmp_path, "big", x, {})
    before = read_chars()
    chunk = lc.read_frames(path, 100, 108)
    spent = read_chars() - before
    assert torch.equal(chunk, x[100:108])
    assert spent < path.stat().st_size // 20, f"read {spent} bytes of a {path.stat().st_size}-byte file for 8 frames"


def test_reserved_metadata_and_unsafe_ids_are_rejected(tmp_path):
    with pytest.raises(lc.CorpusError, match="num_frames"):
        lc.write_video(tmp_path, "v", latents(3), {"num_frames": 3})
    with pytest.raises(lc.CorpusError, match="'../evil'"):
        lc.write_video(tmp_path, "../evil", latents(3), {})
    with pytest.raises(lc.CorpusError, match=r"\[T, C, H, W\]"):
        lc.write_video(tmp_path, "v", torch.zeros(4, 6, 10), {})


def test_verify_video_rejects_truncated_mislabelled_missing_files(tmp_path):
    good = lc.write_video(tmp_path, "good", latents(6), {})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    mislabelled = tmp_path / "mislabelled.safetensors"
    save_file({"latents": latents(6)}, str(mislabelled), metadata={"num_frames": "7", "frame_shape": "[4, 6, 10]", "dtype": "bfloat16"})
    wrong_key = tmp_path / "wrong_key.safetensors"
    save_file({"x": latents(6)}, str(wrong_key), metadata={"num_frames": "6", "frame_shape": "[4, 6, 10]", "dtype": "bfloat16"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    assert lc.verify_video(good)
    for bad in (truncated, mislabelled, wrong_key, garbage, tmp_path / "missing.safetensors"):
        assert not lc.verify_video(bad), bad.name


def test_failed_write_leaves_no_file_and_no_index_entry(tmp_path, monkeypatch):
    lc.write_video(tmp_path, "first", latents(4), {})

    write_bytes = Path.write_bytes

    def crash(path, data):  # killed halfway through writing the file
        write_bytes(path, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        lc.write_video(tmp_path, "second", latents(4), {})
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["first.safetensors"]
    assert list(lc.read_index(tmp_path)) == ["first"]


def _write_many(corpus_dir: str, rank: int) -> None:
    for i in range(6):
        lc.write_video(corpus_dir, f"r{rank}_{i}", latents(2, seed=i), {"rank": rank})


def test_concurrent_writers_all_end_up_in_the_index(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), r)) for r in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(lc.read_index(tmp_path)) == sorted(f"r{r}_{i}" for r in range(3) for i in range(6))


def test_rebuild_index_relists_complete_files_and_skips_broken_ones(tmp_path, caplog):
    for i in range(3):
        lc.write_video(tmp_path, f"v{i}", latents(5, seed=i), {"prompt": f"p{i}"})
    expected = lc.read_index(tmp_path)
    (tmp_path / "index.json").unlink()
    broken = tmp_path / "videos" / "v1.safetensors"
    broken.write_bytes(broken.read_bytes()[:50])
    (tmp_path / "videos" / ".v9.safetensors.abc.tmp.safetensors").write_bytes(b"temp of an unfinished write")
    with caplog.at_level("WARNING"):
        rebuilt = lc.rebuild_index(tmp_path)
    assert rebuilt == {k: expected[k] for k in ("v0", "v2")}
    assert lc.read_index(tmp_path) == rebuilt
    assert "v1.safetensors" in caplog.text


def test_read_index_rejects_other_formats(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else", "version": 3, "videos": {}}))
    with pytest.raises(lc.CorpusError, match="something-else"):
        lc.read_index(tmp_path)
    assert lc.read_index(tmp_path / "nowhere") == {}


def test_truncated_index_is_one_clear_error(tmp_path):
    from utils.latent_corpus import CorpusError, read_index

    (tmp_path / "index.json").write_text('{"format": "longlive-rag-latent-corpus", "vers')
    with pytest.raises(CorpusError) as err:  # before: json.JSONDecodeError "Invalid control character ..."
        read_index(tmp_path)
    assert f"{tmp_path / 'index.json'} is truncated or not JSON" in str(err.value)
    assert "rerun generate_latent.py" in str(err.value)

from pathlib import Path

import pytest
import torch

from ae.data import LatentChunkDataset, LatentDataError, build_chunk_datasets, discover_videos, split_by_video
from utils import latent_corpus

FRAME = (2, 3, 4)  # [C, H, W]
S = 4


def labelled_video(video: int, frames: int) -> torch.Tensor:
    """[T, C, H, W] whose every value is 1000 * video + frame, so a chunk names its origin."""
    t = torch.arange(frames, dtype=torch.float32) + 1000 * video
    return t.view(frames, 1, 1, 1).expand(frames, *FRAME).contiguous()


def origin(chunk: torch.Tensor) -> tuple[int, int]:
    first = int(chunk[0, 0, 0, 0])
    return first // 1000, first % 1000


def pt_folder(root: Path, lengths: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(lengths):
        torch.save(labelled_video(i, t), root / f"latent_{i:06d}.pt")
    return root


def corpus_folder(root: Path, lengths: list[int]) -> Path:
    for i, t in enumerate(lengths):
        latent_corpus.write_video(root, f"latent_{i:06d}", labelled_video(i, t), {"prompt": f"video {i}"})
    return root


def read_chars() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def test_items_are_the_planned_consecutive_frames(tmp_path):
    videos = discover_videos(pt_folder(tmp_path, [10, 12, 9]), FRAME, S)
    ds = LatentChunkDataset(videos, S, chunks_per_video=5, seed=3)
    assert len(ds) == 15
    for i, (name, start) in enumerate(ds.plan):
        chunk = ds[i]
        assert chunk.shape == (S, *FRAME) and chunk.dtype == torch.float32
        vid = int(name.removeprefix("latent_").removesuffix(".pt"))
        assert origin(chunk) == (vid, start)
        torch.testing.assert_close(chunk[:, 0, 0, 0], torch.arange(start, start + S, dtype=torch.float32) + 1000 * vid)
    assert sorted(name for name, _ in ds.plan) == sorted([v.name for v in videos] * 5)
    assert all(0 <= start <= v.num_frames - S for (name, start) in ds.plan for v in videos if v.name == name)


def test_plan_depends_only_on_seed_and_epoch(tmp_path):
    videos = discover_videos(pt_folder(tmp_path, [40, 40, 40]), FRAME, S)
    a, b = LatentChunkDataset(videos, S, 6, seed=1), LatentChunkDataset(videos, S, 6, seed=1)
    a.set_epoch(4)
    b.set_epoch(2)
    b.set_epoch(4)
    assert a.plan == b.plan
    epoch5 = LatentChunkDataset(videos, S, 6, seed=1)
    epoch5.set_epoch(5)
    assert epoch5.plan != a.plan
    assert LatentChunkDataset(videos, S, 6, seed=2).plan != LatentChunkDataset(videos, S, 6, seed=1).plan


def test_pt_and_corpus_layouts_serve_identical_chunks(tmp_path):
    lengths = [9, 14, 11, 8]
    from_pt = build_chunk_datasets(pt_folder(tmp_path / "pt", lengths), FRAME, S, 3, 0.25, seed=0)
    from_corpus = build_chunk_datasets(corpus_folder(tmp_path / "corpus", lengths), FRAME, S, 3, 0.25, seed=0)
    for ds_pt, ds_corpus in zip(from_pt, from_corpus):
        assert [(Path(n).stem, s) for n, s in ds_pt.plan] == [(Path(n).stem, s) for n, s in ds_corpus.plan]
        for i in range(len(ds_pt)):
            assert torch.equal(ds_pt[i], ds_corpus[i])


def test_split_is_by_video_seeded_and_validation_chunks_never_trained_on(tmp_path):
    folder = pt_folder(tmp_path, [12] * 20)
    train, val = build_chunk_datasets(folder, FRAME, S, 4, 0.1, seed=5)
    train_ids = {v.name for v in train.videos}
    val_ids = {v.name for v in val.videos}
    assert len(val_ids) == 2 and len(train_ids) == 18 and not train_ids & val_ids
    val_numbers = {int(n[7:13]) for n in val_ids}
    for epoch in range(3):
        train.set_epoch(epoch)
        assert {origin(train[i])[0] for i in range(len(train))}.isdisjoint(val_numbers)
    assert {origin(val[i])[0] for i in range(len(val))} == val_numbers
    again = split_by_video(discover_videos(folder, FRAME, S), 0.1, seed=5)
    assert [v.name for v in again[1]] == sorted(val_ids)
    other_seeds = {tuple(v.name for v in split_by_video(train.videos + val.videos, 0.1, seed=s)[1]) for s in range(6)}
    assert len(other_seeds) > 1


def test_split_keeps_at_least_one_video_on_each_side(tmp_path):
    videos = discover_videos(pt_folder(tmp_path, [8] * 3), FRAME, S)
    train, val = split_by_video(videos, 0.01, seed=0)
    assert (len(train), len(val)) == (2, 1)
    train, val = split_by_video(videos, 0.99, seed=0)
    assert (len(train), len(val)) == (1, 2)
    with pytest.raises(LatentDataError, match="at least 2 videos"):
        split_by_video(videos[:1], 0.1, seed=0)


def test_corrupt_short_and_misshaped_files_are_skipped_by_name(tmp_path, caplog):
    folder = pt_folder(tmp_path, [10, 3, 10])  # latent_000001.pt is shorter than a chunk
    (folder / "broken.pt").write_bytes((folder / "latent_000000.pt").read_bytes()[:200])
    torch.save(torch.zeros(10, 5, 3, 4), folder / "wrong_channels.pt")
    torch.save({"latents": labelled_video(9, 10)}, folder / "a_dict.pt")
    with caplog.at_level("WARNING"):
        videos = discover_videos(folder, FRAME, S)
    assert [v.name for v in videos] == ["latent_000000.pt", "latent_000002.pt"]
    for name in ("latent_000001.pt", "broken.pt", "wrong_channels.pt", "a_dict.pt"):
        assert name in caplog.text
    assert "3 frames" in caplog.text and "[5, 3, 4]" in caplog.text


def test_corpus_videos_missing_or_truncated_after_indexing_are_skipped(tmp_path, caplog):
    folder = corpus_folder(tmp_path, [10, 10, 10])
    (folder / "videos" / "latent_000000.safetensors").unlink()
    truncated = folder / "videos" / "latent_000002.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:-8])
    with caplog.at_level("WARNING"):
        videos = discover_videos(folder, FRAME, S)
    assert [v.name for v in videos] == ["videos/latent_000001.safetensors"]
    assert "latent_000000.safetensors" in caplog.text and "latent_000002.safetensors" in caplog.text


def test_no_usable_video_is_an_error_naming_the_folder(tmp_path):
    pt_folder(tmp_path, [2, 3])
    with pytest.raises(LatentDataError, match=str(tmp_path)):
        discover_videos(tmp_path, FRAME, S)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_videos(tmp_path / "nowhere", FRAME, S)


@pytest.mark.parametrize("layout", ["pt", "corpus"])
def test_chunk_read_does_not_read_the_whole_file(tmp_path, layout):
    big = torch.randn(200, 16, 30, 52)  # 20 MB
    if layout == "pt":
        torch.save(big, tmp_path / "big.pt")
        torch.save(big[:10].clone(), tmp_path / "small.pt")
    else:
        latent_corpus.write_video(tmp_path, "big", big, {})
        latent_corpus.write_video(tmp_path, "small", big[:10], {})
    videos = discover_videos(tmp_path, (16, 30, 52), 8)
    record = next(v for v in videos if "big" in v.name)
    before = read_chars()
    chunk = record.read(100, 108)
    spent = read_chars() - before
    assert torch.equal(chunk, big[100:108])
    assert spent < record.path.stat().st_size // 20, f"read {spent} bytes of a {record.path.stat().st_size}-byte file"

import pytest
import torch

from utils.distributed import DistInfo, dist_info_from_env, gather_to_main, rank_device, shard


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_partition_items_without_duplicates_or_gaps(n, world):
    items = list(range(100, 100 + n))
    shards = [shard(items, r, world) for r in range(world)]
    merged = sorted(x for s in shards for x in s)
    assert merged == items
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_is_strided_and_keeps_order():
    assert shard(list("abcdefg"), 1, 3) == ["b", "e"]
    assert shard(range(5), 0, 2) == [0, 2, 4]


def test_shard_rejects_rank_outside_world():
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        shard([1, 2], 2, 2)


def test_dist_info_reads_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert dist_info_from_env() == DistInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_info_from_env()
    assert (info.rank, info.world_size, info.local_rank, info.is_main, info.is_distributed) == (3, 4, 1, False, True)


def test_rank_device_on_cpu_and_without_cuda():
    info = DistInfo(1, 2, 1)
    assert rank_device("cpu", info) == torch.device("cpu")
    if torch.cuda.is_available():
        assert rank_device("auto", DistInfo()) == torch.device("cuda", 0)
    else:
        assert rank_device("auto", info) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="device 'cuda' was requested but CUDA is not available"):
            rank_device("cuda", info)


def test_gather_in_a_single_process_returns_own_object():
    assert gather_to_main({"a": 1}, DistInfo()) == [{"a": 1}]

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from utils.distributed import DistInfo, dist_info_from_env, finish_distributed, gather_to_main, rank_device, shard

REPO = Path(__file__).resolve().parents[1]


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


def test_finish_in_a_single_process_is_a_no_op():
    finish_distributed(DistInfo())
    assert not torch.distributed.is_initialized()


FINISH_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch.distributed as dist
    from utils.distributed import dist_info_from_env, finish_distributed, gather_to_main, init_distributed
    import torch

    info = dist_info_from_env()
    marker = Path(sys.argv[1])
    init_distributed(info, torch.device("cpu"))
    gathered = gather_to_main(info.rank, info)
    if info.is_main:
        time.sleep(2.0)  # rank 0 writes the run summary after the gather
        marker.write_text(str(gathered))
    finish_distributed(info)
    assert not dist.is_initialized()
    if not info.is_main:  # rank 1 leaves only after rank 0 has finished its work
        assert marker.read_text() == "[0, 1]", "rank 1 tore the process group down before rank 0 was done"
""")


def test_finish_lets_no_rank_tear_down_before_rank_0_is_done(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(FINISH_WORKER)
    marker = tmp_path / "rank0_done.txt"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(port), str(script), str(marker)], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.read_text() == "[0, 1]"


def launch(tmp_path: Path, command: str, env: dict) -> subprocess.CompletedProcess:
    """Run `bash <command> k=v` with a stand-in `python` that prints what torchrun would have been given."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} $*"\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("GPU", "GPUS", "NPROC", "NGPU", "CUDA_VISIBLE_DEVICES")}
    return subprocess.run(["bash", *command.split(), "k=v"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**clean, "PATH": f"{fake.parent}:{os.environ['PATH']}", "PORT": "29999", **env})


# launcher command -> the entry point and config it hands to torchrun
LAUNCHERS = {
    "inference.sh demo native": "inference.py --config configs/demo_native.yaml",
    "generate_latent.sh": "generate_latent.py --config configs/generate_latent.yaml",
    "train_ae_delta.sh": "train_ae_delta.py --config ae/configs/ae_delta.yaml",
}


@pytest.mark.parametrize("command", LAUNCHERS)
@pytest.mark.parametrize("env", [{"GPU": "0,2", "NPROC": "3"}, {"GPUS": "0,2", "NGPU": "3"},
                                 {"GPU": "0,2", "GPUS": "0,2", "NPROC": "3", "NGPU": "3"}])
def test_every_launcher_takes_either_spelling_of_devices_and_processes(tmp_path, command, env):
    result = launch(tmp_path, command, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"CUDA_VISIBLE_DEVICES=0,2 -m torch.distributed.run --nproc_per_node 3 --master_port 29999 -m utils.parent_death {LAUNCHERS[command]} k=v")


@pytest.mark.parametrize("command", LAUNCHERS)
def test_launcher_refuses_two_spellings_that_disagree(tmp_path, command):
    result = launch(tmp_path, command, {"NPROC": "2", "NGPU": "4"})
    assert result.returncode == 2 and result.stdout == ""
    assert "NPROC=2 and NGPU=4 disagree" in result.stderr
    result = launch(tmp_path, command, {"GPU": "0", "GPUS": "1"})
    assert result.returncode == 2 and "GPU=0 and GPUS=1 disagree" in result.stderr


def test_job_process_group_is_gloo_on_cuda_too(monkeypatch):
    import torch.distributed as dist

    from utils import distributed

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    distributed.init_distributed(distributed.DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cuda", 1))
    assert calls[0] == ("set_device", torch.device("cuda", 1))
    assert calls[1][0] == "gloo" and calls[1][1]["rank"] == 1 and calls[1][1]["world_size"] == 2

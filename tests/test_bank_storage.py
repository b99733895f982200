import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pipeline.bank_storage import BankStorageError, DiskTier, MemoryTier, SlabStorage, choose_tier

ROOT = Path(__file__).resolve().parents[1]
SLAB = (1, 2, 2, 3, 2, 4)  # [B, L, 2, T, n, d]


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_slabs_round_trip_across_chunks_and_tiers(tmp_path):
    for tier in (MemoryTier("cpu"), DiskTier(tmp_path, planned_bytes=0)):
        store = SlabStorage(tier, SLAB, torch.bfloat16, torch.device("cpu"), max_slots=None)
        store.chunk_slots = 3
        kv = torch.randn(7, 2, 2, 1, 3, 2, 4).to(torch.bfloat16)  # per slot: k, v [L, B, T, n, d]
        for slot in range(7):
            store.write(slot, kv[slot, 0], kv[slot, 1])
        assert store.capacity == 9 and len(store._chunks) == 3
        got = store.read([(6, 0), (0, 0), (4, 0)])  # each [L, 2, T, n, d]
        expected = kv[[6, 0, 4], :, :, 0].transpose(1, 2)
        assert got[0].dtype == torch.bfloat16 and torch.equal(torch.stack(got), expected)
        store.close()


def test_budgeted_storage_never_allocates_past_its_slots():
    store = SlabStorage(MemoryTier("cpu"), SLAB, torch.float32, torch.device("cpu"), max_slots=5)
    store.chunk_slots = 4
    store.ensure(5)
    assert store.capacity == 5
    with pytest.raises(BankStorageError, match="budget of 5 frames"):
        store.ensure(6)


def test_disk_tier_refuses_a_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(BankStorageError, match="not_a_folder.*not a writable folder"):
        DiskTier(blocker / "bank", planned_bytes=0)


def test_disk_tier_refuses_a_read_only_filesystem():
    with pytest.raises(BankStorageError, match="not a writable folder"):
        DiskTier("/proc/history_bank", planned_bytes=0)


def test_disk_tier_checks_free_space_at_start(tmp_path):
    with pytest.raises(BankStorageError, match="GB free but the history bank of this run needs up to"):
        DiskTier(tmp_path, planned_bytes=10**18)
    assert list(tmp_path.iterdir()) == []


def test_disk_tier_full_during_the_run_is_a_clear_error(tmp_path):
    # a 1 MB file-size limit makes the disk 'full' for this process: posix_fallocate fails with EFBIG
    proc = run_python(f"""
        import resource, signal, torch
        from pipeline.bank_storage import BankStorageError, DiskTier
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
        tier = DiskTier({str(tmp_path)!r}, planned_bytes=0)
        tier.allocate((2**18,), torch.float32)  # 1 MB: fits
        try:
            tier.allocate((2**18,), torch.float32)
        except BankStorageError as err:
            print(err)
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "cannot hold" in out and str(tmp_path) in out and "memory_budget_gb" in out


def test_killed_run_leaves_no_bank_file(tmp_path):
    proc = run_python(f"""
        import sys, time, torch
        from pipeline.bank_storage import DiskTier, SlabStorage
        store = SlabStorage(DiskTier({str(tmp_path)!r}, planned_bytes=0), (1, 2, 2, 64, 4, 16), torch.float32,
                            torch.device("cpu"), max_slots=None)
        for slot in range(8):
            kv = torch.full((2, 1, 64, 4, 16), float(slot))
            store.write(slot, kv, -kv)
        print("banked", flush=True)
        time.sleep(600)
    """)
    try:
        assert proc.stdout.readline().strip() == "banked", proc.stderr.read()
        # the process maps a file that lives in the folder but has no name there
        links = [os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()]
        assert any(link.startswith(str(tmp_path / "history_bank-")) and link.endswith("(deleted)") for link in links)
        assert list(tmp_path.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []


def test_auto_on_cpu_picks_host_memory_when_it_fits():
    choice = choose_tier("auto", None, 10**6, torch.device("cpu"))
    assert isinstance(choice.tier, MemoryTier) and choice.tier.name == "host" and not choice.tier.pin
    assert "no accelerator" in choice.reason and "available host memory" in choice.reason


def test_auto_falls_back_to_disk_then_explains_what_to_set(tmp_path):
    huge = 10**15  # more than any host memory, less than the check's free-space figure needs
    with pytest.raises(BankStorageError, match="memory_budget_gb.*memory_device=disk"):
        choose_tier("auto", None, huge, torch.device("cpu"))
    with pytest.raises(BankStorageError, match="GB free"):
        choose_tier("auto", str(tmp_path), huge, torch.device("cpu"))
    choice = choose_tier("disk", str(tmp_path), 10**6, torch.device("cpu"))
    assert isinstance(choice.tier, DiskTier)
    choice.tier.close()


def test_named_tiers_pin_host_memory_only_for_a_gpu():
    assert not choose_tier("cpu", None, 0, torch.device("cpu")).tier.pin
    assert choose_tier("cpu", None, 0, torch.device("cuda")).tier.pin


def test_a_device_without_index_means_the_compute_device():
    tier = choose_tier("cuda", None, 0, torch.device("cuda:1")).tier
    assert tier.device == torch.device("cuda:1") and not tier.pin

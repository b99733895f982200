"""No host synchronisation between a block's first and last network call (issue 18 item 2).

The demo configs run block by block with a HostSyncCounter active from the end of `begin_block`
(the block's context is decided) to the start of `end_block` (its last call, the recache pass, has
returned): the N denoising calls, the re-noising draws and the recache pass, including latentmem's
prefetch of the next block's retrieval. Where CUDA exists the same run also goes through
`torch.cuda.set_sync_debug_mode("error")`.

The prefetched gather reads the selected pool indices on the host, but in the history bank's reader
thread after a non-blocking copy (pipeline/history_bank.py): the counter, a TorchFunctionMode, sees the
compute thread only, which is the thread that must never wait. The test checks that every retrieval
went that way: the bank's blocking `gather` never runs.
"""
from pathlib import Path

import pytest
import torch

from pipeline.build import build_method, load_generator
from pipeline.history_bank import HistoryBank
from inference_job.config import InferenceConfig
from pipeline.rollout import CausalRollout, generate
from pipeline.sample import initial_noise
from utils.config import load_config
from utils.host_sync import HostSyncCounter
from wan.geometry import LatentGeometry
from wan.model_config import model_preset

ROOT = Path(__file__).resolve().parents[1]


def test_counter_counts_host_reads_and_host_data_only_while_active():
    x = torch.arange(4.0)
    with HostSyncCounter() as counter:
        x.tolist()
        counter.active = True
        x.sum().item(), x.tolist(), bool(x[0] > 1), float(x[1]), torch.tensor([1, 2]), x.cpu(), x.nonzero()
        y = (x * 2 + 1).softmax(0)  # device work only
        counter.active = False
        y.tolist()
    assert dict(counter.calls) == {"item": 1, "tolist": 1, "__bool__": 1, "__float__": 1, "tensor": 1, "cpu": 1, "nonzero": 1}


def block_syncs(method: str, monkeypatch, device: torch.device) -> tuple[list[int], int, object]:
    """Host syncs of every block of the demo between its first and last call -> (per block, blocking bank
    gathers anywhere in the run, the result)."""
    cfg = load_config(InferenceConfig, ROOT / "configs" / f"demo_{method}.yaml", ["num_output_frames=24"])
    mcfg = model_preset(cfg.model_preset)
    model = load_generator(mcfg, None, device, torch.float32)
    geometry = LatentGeometry.of(mcfg, cfg.latent_height, cfg.latent_width)
    noise, renoise = initial_noise(cfg.seed, geometry, cfg.num_output_frames, device)
    prompt = torch.randn(1, 7, mcfg.text_dim, generator=torch.Generator().manual_seed(0))
    counter, per_block = HostSyncCounter(), []
    begin, end = CausalRollout.begin_block, CausalRollout.end_block

    def begin_block(self, block):
        attn = begin(self, block)
        counter.active = True
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        return attn

    def end_block(self, *args):
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        counter.active = False
        per_block.append(counter.total - sum(per_block))
        return end(self, *args)

    gather, blocking_gathers = HistoryBank.gather, []

    def bank_gather(self, *args):
        blocking_gathers.append(args)
        return gather(self, *args)

    monkeypatch.setattr(HistoryBank, "gather", bank_gather)
    monkeypatch.setattr(CausalRollout, "begin_block", begin_block)
    monkeypatch.setattr(CausalRollout, "end_block", end_block)
    with counter:
        result = generate(model, cfg, noise, prompt, renoise, build_method(cfg, mcfg, device).policy)
    return per_block, len(blocking_gathers), result


@pytest.mark.parametrize("method", ["native", "latentmem", "infrope", "deepforcing"])
def test_demo_blocks_make_no_host_sync_between_first_and_last_call(method, monkeypatch):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_block, blocking_gathers, result = block_syncs(method, monkeypatch, device)
    assert len(per_block) == 8 and per_block == [0] * 8
    assert torch.isfinite(result.latents).all()
    retrievals = [e["retrieval"] for e in result.context_log if e.get("retrieval") is not None]
    assert blocking_gathers == 0
    if method == "latentmem":  # blocks 6, 7 retrieve; their gathers were started inside the previous block's span
        assert [e["block_start_frame"] for e in retrievals] == [18, 21] and result.extras["kv_gathers"] == 2
        assert all(len(e["selected_frames"][0]) == min(6, e["num_eligible"]) > 0 for e in retrievals)
    else:
        assert retrievals == []

"""`python -m pipeline.replay` on the reference traces and on a trace of another configuration."""
import json
import shutil

import pytest
import torch

from conftest import FIXTURES, load_fixture
from pipeline.build import build_context_method
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.prompt_schedule import PromptSchedule
from pipeline.replay import main
from pipeline.retrieval import TopKRetrieval
from pipeline.rollout import CausalRollout, gaussian_noise
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig


def test_replay_passes_on_reference_traces(capsys):
    assert main([str(FIXTURES / "gen_native_sink3.pt"), str(FIXTURES / "gen_latentmem_avgpool.pt")]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "retrieved indices identical" in out


@pytest.mark.parametrize("name", ["gen_single_sink1.pt", "gen_switch_sink1.pt", "gen_switch_w12_sink1.pt"])
def test_replay_reproduces_the_official_infrope_traces_and_their_layout(name, capsys):
    assert main([str(FIXTURES / "infrope" / name), "--atol", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert f"PASS {name}" in out and "attention layout identical" in out


def replay_with_edited_layout(tmp_path, subfolder: str, rollout: str, edit) -> int:
    """Copy a trace and its layout file (the trace names its weights as ../gen_generator.pt), `edit` the layout's
    calls in place, replay -> exit code."""
    folder = tmp_path / subfolder
    folder.mkdir()
    for name in (f"gen_{rollout}.pt", f"attn_layout_{rollout}.json"):
        shutil.copy(FIXTURES / subfolder / name, folder)
    shutil.copy(FIXTURES / "gen_generator.pt", tmp_path)
    layout_file = folder / f"attn_layout_{rollout}.json"
    layout = json.loads(layout_file.read_text())
    edit(layout["calls"])
    layout_file.chmod(0o644)
    layout_file.write_text(json.dumps(layout))
    return main([str(folder / f"gen_{rollout}.pt")])


def test_replay_fails_when_the_attention_layout_differs(tmp_path, capsys):
    def edit(calls):
        calls[40]["queries"][0][1] += 1  # block 8 (after the cut): 24@45 -> 24@46

    assert replay_with_edited_layout(tmp_path, "infrope", "switch_sink1", edit) == 1
    out = capsys.readouterr().out
    assert "FAIL gen_switch_sink1.pt" in out and "attention layout DIFFERS" in out and "call 40:" in out


def test_replay_fails_on_a_corrupted_trace(tmp_path, capsys):
    trace = load_fixture("gen_native_sink3.pt")
    trace["recache_x0"][2] += 1e-3
    shutil.copy(FIXTURES / "gen_generator.pt", tmp_path)
    torch.save(trace, tmp_path / "bad.pt")
    assert main([str(tmp_path / "bad.pt")]) == 1
    assert "FAIL bad.pt" in capsys.readouterr().out


def record_trace(model_cfg: dict, rcfg: RolloutConfig, latent_shape, num_frames: int, seed: int) -> tuple[dict, CausalWanModel]:
    """Run a rollout and record it in the fixtures' trace format."""
    torch.manual_seed(seed)
    model = CausalWanModel(WanModelConfig.from_dict(model_cfg)).eval()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, num_frames, *latent_shape, generator=g)
    prompt = torch.randn(1, 5, model_cfg["text_dim"], generator=g)
    nf, steps, mk = rcfg.num_frame_per_block, len(rcfg.denoising_step_list), rcfg.model_kwargs
    policy = build_context_method(rcfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    rollout = CausalRollout(model, rcfg, policy, [prompt], latent_shape, num_frames)
    calls, inputs, timesteps, x0s, renoise, recache = [], [], [], [], [], []
    for block in PromptSchedule.single("").blocks(num_frames, nf):
        b, first = block.index, block.frames[0]
        attn = rollout.begin_block(block)
        log = rollout.policy.memory.log
        indices = log[-1]["selected_pool_indices"] if log and log[-1]["block_start_frame"] == first else None
        x = noise[:, first : first + nf]
        block_in, block_t, block_x0, block_eps = [], [], [], []
        for i, t in enumerate(rollout.step_timesteps):
            ts = torch.full((1, nf), t)
            x0 = rollout.predict_x0(attn, x, t)
            calls.append({"block": b, "role": "denoise", "step": i, "current_start_frame": first, "memory_indices": indices})
            block_in.append(x), block_t.append(ts), block_x0.append(x0)
            if i + 1 < steps:
                eps = torch.randn(x0.shape, generator=g)
                block_eps.append(eps)
                x = rollout.schedule.renoise(x0, eps, rollout.step_timesteps[i + 1])
        calls.append({"block": b, "role": "recache", "step": -1, "current_start_frame": first, "memory_indices": indices})
        x0_recache, kv = rollout.recache(attn, x0, gaussian_noise(g))
        rollout.end_block(block, attn, x0, kv)
        recache.append(x0_recache)
        inputs.append(torch.stack(block_in)), timesteps.append(torch.stack(block_t)), x0s.append(torch.stack(block_x0)), renoise.append(torch.stack(block_eps))
    step_x0 = torch.stack(x0s)
    trace = {
        "config": {
            "model": model_cfg, "num_frame_per_block": nf, "local_attn_size": mk.local_attn_size, "sink_size": mk.sink_size,
            "memory_size": mk.memory_size, "recent_exclude": mk.recent_exclude, "compression_method": mk.compression_method,
            "denoising_step_list": rcfg.denoising_step_list, "warp_denoising_step": True,
            "timestep_shift": mk.timestep_shift, "context_noise": 0, "lora": None, "files": {"generator": "gen.pt"},
        },
        "mode": rcfg.method, "prompt_embeds": prompt, "noise": noise, "calls": calls,
        "step_input": torch.stack(inputs), "step_timestep": torch.stack(timesteps), "step_x0": step_x0,
        "renoise_noise": torch.stack(renoise), "recache_x0": torch.stack(recache),
        "output": step_x0[:, -1].permute(1, 0, 2, 3, 4, 5).reshape(1, num_frames, *latent_shape),
        "descriptors": rollout.policy.extras()["descriptors"],
        "memory_indices_log": [
            {"query_frame": e["block_start_frame"], "selected_pool_indices": e["selected_pool_indices"]}
            for e in rollout.policy.extras()["retrieval_log"]
        ],
    }
    return trace, model


def test_replay_handles_other_configurations(tmp_path, capsys):
    model_cfg = {"patch_size": [1, 2, 2], "text_len": 8, "in_dim": 16, "dim": 48, "ffn_dim": 96, "freq_dim": 16,
                 "text_dim": 24, "out_dim": 16, "num_heads": 3, "num_layers": 3, "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
    rcfg = RolloutConfig(num_frame_per_block=2, denoising_step_list=[1000, 600, 300], method="latentmem",
                         model_kwargs=ModelKwargs(local_attn_size=10, sink_size=2, memory_size=3, recent_exclude=2,
                                                  compression_method="avg_pool"))
    trace, model = record_trace(model_cfg, rcfg, (16, 6, 10), num_frames=24, seed=3)
    assert any(e["selected_pool_indices"] for e in trace["memory_indices_log"])
    torch.save({"generator": {"model." + k: v for k, v in model.state_dict().items()}}, tmp_path / "gen.pt")
    torch.save(trace, tmp_path / "other.pt")
    assert main([str(tmp_path / "other.pt")]) == 0
    assert "PASS other.pt" in capsys.readouterr().out


def test_replay_skips_weight_files_and_rejects_missing_or_no_traces(tmp_path, capsys):
    assert main([str(FIXTURES / "gen_generator.pt"), str(FIXTURES / "gen_native_lora.pt")]) == 0
    out = capsys.readouterr().out
    assert "SKIP gen_generator.pt: not a rollout trace" in out and "PASS gen_native_lora.pt" in out
    assert main([str(FIXTURES / "gen_ae.pt")]) == 2
    assert "none of the given files is a rollout trace" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("fail_at", [None, 7])
def test_call_replay_closes_the_history_bank(monkeypatch, fail_at):
    """The call replay owns a latentmem policy: its bank (a disk tier's open file) is closed when the replay
    ends, and when a call raises mid-way."""
    from pipeline import replay
    from pipeline.history_bank import HistoryBank

    closed, calls = [], []
    real_close, real_predict = HistoryBank.close, CausalRollout.predict_x0
    monkeypatch.setattr(HistoryBank, "close", lambda self: (closed.append(self), real_close(self)))

    def predict(self, attn, x, t):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("interrupted")
        return real_predict(self, attn, x, t)

    monkeypatch.setattr(CausalRollout, "predict_x0", predict)
    path = FIXTURES / "gen_latentmem_avgpool.pt"
    trace = load_fixture(path.name)
    rcfg = replay.rollout_config(trace, path.parent)
    model = replay.build_model(trace["config"], path.parent)
    method = replay.build_method(rcfg, model, tuple(trace["noise"].shape[2:]))
    if fail_at is None:
        errors, _, log, _ = replay.replay_calls(model, rcfg, method, trace)
        assert len(errors) == len(trace["calls"]) and log
    else:
        with pytest.raises(RuntimeError, match="interrupted"):
            replay.replay_calls(model, rcfg, method, trace)
    assert len(closed) == 1


@pytest.mark.parametrize("name", ["gen_switch_gsink.pt", "gen_switch_nogsink.pt", "gen_early_lora_gsink.pt"])
def test_replay_reproduces_the_official_longlive_switch_traces(name, capsys):
    """Every call (switch recaches included), the window cache after each switch, the full loop, and the layout
    with the prompt segment of every attended key, within 1e-5 (the LoRA trace merges its adapter)."""
    assert main([str(FIXTURES / "longlive_switch" / name)]) == 0
    out = capsys.readouterr().out
    assert f"PASS {name}" in out and "caches after 2 switches" in out and "attention layout identical" in out


def test_replay_fails_when_a_key_came_from_another_prompt_segment(tmp_path, capsys):
    def edit(calls):
        assert calls[26]["keys"][0] == [0, 0, "recache", 0]  # block 5 after the switch: the sink is segment 0's
        calls[26]["keys"][0][3] = 1

    assert replay_with_edited_layout(tmp_path, "longlive_switch", "switch_gsink", edit) == 1
    out = capsys.readouterr().out
    assert "FAIL gen_switch_gsink.pt" in out and "attention layout DIFFERS" in out and "call 26:" in out


def test_replay_of_a_switch_trace_with_the_other_sink_rule_fails(tmp_path, capsys):
    trace = load_fixture("longlive_switch/gen_switch_gsink.pt")
    trace["config"]["global_sink"] = False
    shutil.copy(FIXTURES / "gen_generator.pt", tmp_path)
    folder = tmp_path / "longlive_switch"
    folder.mkdir()
    torch.save(trace, folder / "flipped.pt")
    assert main([str(folder / "flipped.pt")]) == 1
    out = capsys.readouterr().out
    assert "FAIL flipped.pt" in out

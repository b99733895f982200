import gc
import weakref

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

import inference
import pipeline.build as build
import pipeline.memory_plan as memory_plan
from inference_job.config import load_inference_config
from pipeline.memory_plan import (GB, MemoryPlanError, check_fits, format_plan, gpu_verdict_plan, lora_bytes, memory_plan as plan,
                                  peak)
from wan.lora import LORA_TARGET_MODULES
from wan.model import CausalWanModel
from wan.model_config import model_preset

REAL = [f"configs/{b}_{m}.yaml" for b in ("causal_forcing", "self_forcing", "longlive") for m in ("native", "latentmem")]
CUDA, BF16 = torch.device("cuda"), torch.bfloat16
FRAMES_30S = "num_output_frames=120"  # 1 + 4 * 119 = 477 video frames at 16 fps
KV_FRAME_BF16 = 30 * 2 * 1560 * 1536 * 2  # layers x (k, v) x tokens of a 60 x 104 latent frame x dim x bf16


def parts(items):
    return {i.component: i.nbytes for i in items}


def verdicts(items):
    out = {}
    for gb in (24, 48, 80):
        sized = gpu_verdict_plan(items, gb)
        try:
            check_fits(sized, {d: gb * GB if d.startswith("cuda") else float("inf") for d in {i.device for i in sized}})
            out[gb] = True
        except MemoryPlanError:
            out[gb] = False
    return out


@pytest.mark.parametrize("path", REAL)
def test_real_configs_at_30_s_counted_on_meta(path):
    cfg = load_inference_config(path, [FRAMES_30S])
    items = plan(cfg, CUDA, BF16)
    got = parts(items)
    assert 2.8e9 < got["DiT weights"] < 2.9e9  # 1.42 B parameters in bf16
    assert 11.3e9 < got["text encoder"] < 11.4e9  # UMT5-XXL encoder, 5.68 B parameters in bf16
    assert got["KV cache"] == 12 * KV_FRAME_BF16
    latentmem = path.endswith("latentmem.yaml")
    assert got.get("history bank (108 frames)") == (108 * KV_FRAME_BF16 if latentmem else None)
    total, phase = peak(items, "cuda")
    print(f"{path}: peak {total / GB:.2f} GB ({phase}); verdicts {verdicts(items)}")
    assert verdicts(items) == {24: True, 48: True, 80: True}  # the default `memory_device: auto` puts the bank in host memory where needed
    if latentmem:  # a bank kept on the GPU does not fit 24 GB
        cuda_bank = plan(load_inference_config(path, [FRAMES_30S, "model_kwargs.memory_device=cuda"]), CUDA, BF16)
        assert verdicts(cuda_bank) == {24: False, 48: True, 80: True}


def test_auto_bank_is_planned_where_the_run_puts_it():
    """`auto` keeps the 31 GB bank of a 30 s run on the GPU only where the rollout phase (41.5 GB) fits with
    headroom (a fifth of the GPU): not on 24 or 48 GB, on 80 GB."""
    items = plan(load_inference_config("configs/longlive_latentmem.yaml", [FRAMES_30S]), CUDA, BF16)
    bank_devices = {gb: {i.device for i in gpu_verdict_plan(items, gb) if i.component.startswith("history bank")}
                    for gb in (24, 48, 80)}
    assert bank_devices == {24: {"cpu"}, 48: {"cpu"}, 80: {"cuda"}}
    host = [i for i in gpu_verdict_plan(items, 24) if i.device == "cpu"]
    assert [i.component for i in host] == ["history bank (108 frames) (auto: host)"]
    assert "memory_device" not in host[0].fix and "memory_budget_gb" in host[0].fix


def test_bank_on_the_cpu_makes_the_30_s_latentmem_run_fit_24_gb():
    cfg = load_inference_config("configs/longlive_latentmem.yaml", [FRAMES_30S, "model_kwargs.memory_device=cpu"])
    items = plan(cfg, CUDA, BF16)
    assert {i.device for i in items if i.component.startswith("history bank")} == {"cpu"}
    assert verdicts(items)[24]
    gpu_peak, phase = peak(items, "cuda")
    assert phase == "encode prompts" and gpu_peak < 12e9  # the encoder is released before the rollout


def test_live_app_keeps_the_text_encoder_in_every_phase():
    """The live app encodes typed prompts while the video streams: the encoder's 11.4 GB count in the rollout
    phase (30 s native LongLive: 21.86 GB, still within a 24 GB GPU)."""
    cfg = load_inference_config("configs/longlive_native.yaml", [FRAMES_30S])
    offline, live = plan(cfg, CUDA, BF16), plan(cfg, CUDA, BF16, keep_text_encoder=True)
    encoder = parts(live)["text encoder"] + parts(live)["text encoder activations"]
    offline_rollout = sum(i.nbytes for i in offline if "rollout" in i.phases)
    live_total, live_phase = peak(live, "cuda")
    assert live_phase == "rollout" and live_total == offline_rollout + encoder
    assert 11.4e9 < encoder < 11.5e9 and 21.8e9 < live_total < 21.9e9
    assert verdicts(live) == {24: True, 48: True, 80: True}


def test_lora_bytes_equal_peft_adapter_size():
    mcfg = model_preset("demo")
    model = get_peft_model(CausalWanModel(mcfg), LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGET_MODULES))
    counted = sum(t.numel() for t in get_peft_model_state_dict(model).values()) * 4
    assert lora_bytes(mcfg, 4, torch.float32) == counted


def test_refusal_names_the_component_and_the_option():
    cfg = load_inference_config("configs/causal_forcing_latentmem.yaml", [FRAMES_30S])
    items = plan(cfg, CUDA, BF16)
    with pytest.raises(MemoryPlanError) as err:
        check_fits(items, {"cuda": 24 * GB})
    message = str(err.value)
    assert "41." in message and "on cuda (rollout phase) but 24.00 GB are free" in message
    assert "history bank (108 frames) (31.05 GB): set model_kwargs.memory_device=cpu" in message
    text = format_plan(items)
    assert "history bank (108 frames)" in text and "31.054 GB" in text and "peak 41." in text


def test_run_refuses_before_loading_when_the_plan_does_not_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: 1000)
    monkeypatch.setattr(build, "build_generator", lambda *a: pytest.fail("loaded a model"))
    out = tmp_path / "out"
    assert inference.main(["--config", "configs/demo_latentmem.yaml", f"output_folder={out}", "prompts=[a]"]) == 2
    captured = capsys.readouterr()
    assert "memory plan" in captured.out and "KV cache" in captured.out
    assert captured.err.startswith("error: the run needs") and "0.00 GB are free" in captured.err
    assert not out.exists()


def test_text_encoder_is_released_before_the_first_block(tmp_path, monkeypatch):
    encoders, seen = [], []
    real_build, real_forward = build.build_text_encoder, build.CausalWanModel.forward

    def recording_build(*args):
        encoder = real_build(*args)
        encoders.append(weakref.ref(encoder.model))
        return encoder

    def checking_forward(self, *args, **kwargs):
        if not seen:  # the first call of the first block
            gc.collect()
            seen.append([ref() is None for ref in encoders])
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(build, "build_text_encoder", recording_build)
    monkeypatch.setattr(build.CausalWanModel, "forward", checking_forward)
    assert inference.main(["--config", "configs/demo_native.yaml", f"output_folder={tmp_path}", "num_output_frames=6",
                           "prompts=[a fox,a boat]"]) == 0
    assert len(encoders) == 1 and seen == [[True]]


def test_retrieval_encoder_is_loaded_without_its_decoder():
    retrieval = build.load_retrieval(load_inference_config("configs/demo_latentmem.yaml").model_kwargs, (16, 8, 8),
                                     torch.device("cpu"))
    descriptor = retrieval.descriptor
    names = [name for name, _ in descriptor.encoder.named_parameters()]
    assert names and all(name.startswith("encoder.") for name in names)
    assert descriptor(torch.randn(1, 2, 16, 8, 8)).shape == (1, 2, 32)


FRAMES_120S = "num_output_frames=480"
FP8_FRAME = KV_FRAME_BF16 // 2 + 2 * 30 * 12 * 4  # float8 K/V plus a float32 scale per layer, k|v and head


@pytest.mark.parametrize("dtype, per_frame", [("bfloat16", KV_FRAME_BF16), ("float8_e4m3fn", FP8_FRAME)])
def test_budget_caps_the_planned_bank(dtype, per_frame):
    """A 120 s run with a 16 GB budget plans 16 GB of bank, not the 135 GB of an unbounded bank."""
    cfg = load_inference_config("configs/longlive_latentmem.yaml", [
        FRAMES_120S, "model_kwargs.memory_device=cpu", "model_kwargs.memory_budget_gb=16", f"model_kwargs.memory_dtype={dtype}"])
    frames = int(16 * GB // per_frame)
    items = plan(cfg, CUDA, BF16)
    bank = [i for i in items if i.component.startswith("history bank")]
    assert [(i.component, i.device, i.nbytes) for i in bank] == [(f"history bank ({frames} frames)", "cpu", frames * per_frame)]
    check_fits(items, {"cuda": 48 * GB, "cpu": 24 * GB})


def test_unbounded_bank_that_does_not_fit_names_the_budget():
    cfg = load_inference_config("configs/longlive_latentmem.yaml", [FRAMES_120S, "model_kwargs.memory_device=cpu"])
    with pytest.raises(MemoryPlanError, match=r"history bank \(468 frames\) \(134.57 GB\): set model_kwargs.memory_budget_gb"):
        check_fits(plan(cfg, CUDA, BF16), {"cuda": 48 * GB, "cpu": 24 * GB})


def test_disk_tier_is_planned_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "bank" / "new"  # made by the run: its nearest existing parent's disk counts
    cfg = load_inference_config("configs/longlive_latentmem.yaml", [
        FRAMES_120S, "model_kwargs.memory_device=disk", f"model_kwargs.memory_folder={folder}"])
    items = plan(cfg, CUDA, BF16)
    assert [i.device for i in items if i.component.startswith("history bank")] == [f"disk:{folder}"]
    seen = []
    monkeypatch.setattr(memory_plan.shutil, "disk_usage", lambda path: seen.append(path) or type("U", (), {"free": 100 * GB}))
    assert memory_plan.free_bytes(f"disk:{folder}") == 100 * GB and seen == [tmp_path]
    with pytest.raises(MemoryPlanError, match=f"on disk:{folder} .*a model_kwargs.memory_folder with more room"):
        check_fits(items, {"cuda": 80 * GB, f"disk:{folder}": 100 * GB})

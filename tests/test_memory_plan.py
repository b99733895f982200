import gc
import weakref

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

import inference
import pipeline.build as build
import pipeline.memory_plan as memory_plan
from inference_job.config import load_inference_config
from pipeline.memory_plan import GB, MemoryPlanError, check_fits, format_plan, lora_bytes, memory_plan as plan, peak
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
        try:
            check_fits(items, {d: gb * GB if d.startswith("cuda") else float("inf") for d in {i.device for i in items}})
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
    assert verdicts(items) == ({24: False, 48: True, 80: True} if latentmem else {24: True, 48: True, 80: True})


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

"""The model, bank, VAE, text encoder and retrieval encoder in bfloat16 and float16 (no autocast).

Tolerances are stated in units of the dtype's unit roundoff u (2^-8 for bfloat16, 2^-11 for float16)
times the largest |value| of the reference. Measured on the fp32 reference traces, replaying every
call with the recorded inputs: the largest per-call x0 error is 0.74 u max|x0| in bf16 (0.0142 at
max|x0| 4.97) and 0.67 u max|x0| in fp16 (0.0016); the tests allow 2 u max|x0|.
"""
import copy

import pytest
import torch

from conftest import FIXTURES, load_fixture
from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.build import build_context_method
from pipeline.descriptors import EncoderDescriptor
from pipeline.replay import build_method, build_model, recorded_noise, replay_calls, rollout_config
from pipeline.rollout import CausalRollout, generate
from pipeline.rollout_config import RolloutConfig
from wan.model import CausalWanModel, LayerNorm, Linear, RMSNorm
from wan.model_config import WanModelConfig, model_preset
from wan.t5_conversion import umt5_config_from_reference
from wan.text_encoder import load_umt5_encoder
from wan.vae import WAN21_LATENTS_STD, WanVAE

UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
REDUCED = [torch.bfloat16, torch.float16]
# bench_forward.py's mid-size model, on a quarter of its latent frame so that one block takes seconds
MID = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=512, num_heads=8, num_layers=8)
MID_FRAME = (16, 16, 26)


def float32_names(model: CausalWanModel) -> set[str]:
    return {name for name, p in model.named_parameters() if p.dtype == torch.float32}


@pytest.mark.parametrize("dtype", REDUCED)
def test_inference_dtype_keeps_wan_float32_parts(dtype):
    model = CausalWanModel(model_preset("demo")).to_inference_dtype(dtype)
    assert model.compute_dtype == dtype
    kept = float32_names(model)
    expected = {name for name, _ in model.named_parameters()
                if name.endswith("modulation") or name.startswith(("time_embedding.", "time_projection.", "head."))
                or ".norm" in name}
    assert kept == expected
    assert "blocks.0.norm3.weight" in kept and "blocks.1.self_attn.norm_q.weight" in kept and "head.head.weight" in kept
    for name, p in model.named_parameters():
        if name not in kept:
            assert p.dtype == dtype, name


@pytest.mark.parametrize("dtype", REDUCED)
def test_norms_and_linears_take_any_input_dtype(dtype):
    x = torch.randn(2, 5, 8)
    ln = LayerNorm(8, 1e-6, elementwise_affine=True)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5), ln.bias.uniform_(-0.5, 0.5)
    reference = ln(x)
    # the crash of issue 19: float32 activations into an affine LayerNorm holding reduced-precision weights
    assert torch.allclose(copy.deepcopy(ln).to(dtype)(x), reference, atol=4 * UNIT_ROUNDOFF[dtype] * 3)
    assert ln(x.to(dtype)).dtype == dtype
    rms = RMSNorm(8, 1e-6)
    assert rms(x.to(dtype)).dtype == dtype
    linear = Linear(8, 4)
    out = copy.deepcopy(linear).to(dtype)(x)
    assert out.dtype == dtype
    assert (out.float() - linear(x)).abs().max() < 8 * UNIT_ROUNDOFF[dtype] * linear(x).abs().max()


@pytest.mark.parametrize("trace_name, dtype", [("gen_latentmem_ae.pt", torch.bfloat16), ("gen_native_lora.pt", torch.bfloat16),
                                               ("gen_native_sink3.pt", torch.float16)])
def test_calls_agree_with_fp32_traces(trace_name, dtype):
    trace = load_fixture(trace_name)
    model, rcfg, method = replay_setup(trace, dtype)
    errors, *_ = replay_calls(model, rcfg, method, trace)
    expected = torch.cat([trace["step_x0"].flatten(), trace["recache_x0"].flatten()]).abs().max().item()
    tolerance = 2 * UNIT_ROUNDOFF[dtype] * expected
    assert max(errors) <= tolerance, (max(errors), tolerance)
    assert max(errors) > 1e-2 * tolerance  # really computed in reduced precision (fp32 replays to < 1e-6)


def replay_setup(trace: dict, model_dtype: torch.dtype, memory_dtype: str = "auto"):
    """The trace's model in `model_dtype`, its rollout config with the bank in `memory_dtype`, its descriptor."""
    rcfg = rollout_config(trace, FIXTURES)
    rcfg.model_kwargs.memory_dtype = memory_dtype
    model = build_model(trace["config"], FIXTURES).to_inference_dtype(model_dtype)
    return model, rcfg, build_method(rcfg, model, tuple(trace["noise"].shape[2:]))


def run_latentmem_trace(model_dtype: torch.dtype, memory_dtype: str):
    trace = load_fixture("gen_latentmem_avgpool.pt")
    model, rcfg, method = replay_setup(trace, model_dtype, memory_dtype)
    result = generate(model, rcfg, trace["noise"], trace["prompt_embeds"], recorded_noise(trace), method.policy)
    return trace, result


@pytest.mark.parametrize("memory_dtype", ["bfloat16", "float16"])
def test_history_bank_in_reduced_precision(memory_dtype):
    """fp32 model, bank rounded: the error comes from the banked K/V only (measured max 2.1e-4 for
    bf16 and 3.1e-5 for fp16 at max|x| 4.1, i.e. 0.013 u and 0.015 u); allowed 0.1 u max|x|."""
    trace, result = run_latentmem_trace(torch.float32, memory_dtype)
    expected = [(e["query_frame"], e["selected_pool_indices"]) for e in trace["memory_indices_log"]]
    assert [(e["block_start_frame"], e["selected_pool_indices"]) for e in result.extras["retrieval_log"]] == expected
    assert result.extras["kv_gathers"] == len(expected) > 0
    error = (result.latents - trace["output"]).abs().max().item()
    tolerance = 0.1 * UNIT_ROUNDOFF[getattr(torch, memory_dtype)] * trace["output"].abs().max().item()
    assert 0 < error <= tolerance, (error, tolerance)


@pytest.mark.parametrize("model_dtype, memory_dtype", [(torch.bfloat16, "float16"), (torch.float16, "bfloat16")])
def test_reduced_precision_model_with_other_bank_dtype(model_dtype, memory_dtype):
    trace = load_fixture("gen_latentmem_avgpool.pt")
    model, rcfg, method = replay_setup(trace, model_dtype, memory_dtype)
    rollout = CausalRollout(model, rcfg, method.policy, [trace["prompt_embeds"]], tuple(trace["noise"].shape[2:]), trace["noise"].shape[1])
    assert rollout.policy.cache.k.dtype == model_dtype and rollout.policy.memory.bank.dtype == getattr(torch, memory_dtype)
    _, banked = run_latentmem_trace(model_dtype, memory_dtype)
    _, full = run_latentmem_trace(model_dtype, "float32")
    assert torch.isfinite(banked.latents).all()
    tolerance = 0.1 * UNIT_ROUNDOFF[torch.bfloat16] * full.latents.abs().max().item()
    assert (banked.latents - full.latents).abs().max().item() <= tolerance


@pytest.mark.slow
def test_mid_size_model_in_bf16_end_to_end():
    """One block of bench_forward's mid-size model against the same weights in fp32; measured max error
    6.8e-3 (mean 1.2e-3) of max|x| 3.73, i.e. 0.47 u; allowed 2 u max|x|."""
    torch.manual_seed(0)
    model = CausalWanModel(MID).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, *MID_FRAME, generator=g)
    prompt = torch.randn(1, 16, MID.text_dim, generator=g)
    draws = torch.randn(8, 1, 3, *MID_FRAME, generator=g)

    def run(m):
        it = iter(draws)
        cfg = RolloutConfig()
        return generate(m, cfg, noise, prompt, lambda shape: next(it), build_context_method(cfg, None).policy).latents

    reference = run(model)
    bf16 = run(copy.deepcopy(model).to_inference_dtype(torch.bfloat16))
    assert torch.isfinite(bf16).all()
    error = (bf16 - reference).abs().max().item()
    assert 0 < error <= 2 * UNIT_ROUNDOFF[torch.bfloat16] * reference.abs().max().item()


@pytest.mark.parametrize("dtype", REDUCED)
def test_vae_keeps_float32_statistics_and_matches_fp32(dtype):
    reference = WanVAE.from_preset("demo", None, "cpu", torch.float32)
    vae = WanVAE.from_preset("demo", None, "cpu", dtype)
    assert vae.latents_std.dtype == vae.latents_mean.dtype == torch.float32
    assert vae.latents_std.flatten()[0].item() == pytest.approx(WAN21_LATENTS_STD[0], abs=1e-6)  # bf16 would give 2.8125
    assert vae.dtype == dtype
    video = torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z_ref = reference.encode(video)
    z = vae.encode(video)
    assert z.dtype == torch.float32
    # measured: encode 3.1e-3 (bf16) / 5.5e-4 (fp16) of max|z| 0.94, decode 0.049 / 0.0067 on [-1, 1]
    assert (z - z_ref).abs().max() <= 8 * UNIT_ROUNDOFF[dtype] * z_ref.abs().max()
    decoded = vae.decode(z_ref)
    assert decoded.dtype == dtype
    assert (decoded.float() - reference.decode(z_ref)).abs().max() <= 32 * UNIT_ROUNDOFF[dtype]


@pytest.mark.parametrize("dtype", REDUCED)
def test_text_encoder_in_reduced_precision_matches_reference(dtype, tmp_path):
    """Measured: max error 0.030 (bf16) / 0.0035 (fp16) of max|out| 2.63 (3.0 u and 2.8 u); allowed 8 u."""
    t5 = load_fixture("t5_tiny.pt")
    path = tmp_path / "t5.pth"
    torch.save(t5["state_dict"], path)
    model = load_umt5_encoder(path, umt5_config_from_reference(t5["config"]), "cpu", dtype)
    with torch.no_grad():
        out = model(input_ids=t5["ids"], attention_mask=t5["mask"]).last_hidden_state
    assert out.dtype == dtype
    assert (out.float() - t5["output"]).abs().max() <= 8 * UNIT_ROUNDOFF[dtype] * t5["output"].abs().max()


@pytest.mark.parametrize("dtype", REDUCED)
def test_retrieval_descriptor_takes_reduced_precision_frames(dtype):
    """The descriptor's encoder stays float32 (pipeline.build); frames from a bf16/fp16 run are cast to it."""
    torch.manual_seed(0)
    ae = RetrievalAutoencoder(AEConfig(in_channels=16, spatial_h=8, spatial_w=8, latent_dim=32, hidden_dims=(8, 16))).eval()
    frames = torch.randn(1, 4, 16, 8, 8)
    descriptor = EncoderDescriptor(ae)
    reference = descriptor(frames)
    out = descriptor(frames.to(dtype))
    assert out.dtype == torch.float32
    assert (out - reference).abs().max() <= 4 * UNIT_ROUNDOFF[dtype] * reference.abs().max()


def test_live_lora_adapters_in_bf16_agree_with_fp32_trace():
    """adapter.merge=false: peft keeps the adapters float32 beside bf16 base Linears (measured 0.012)."""
    from wan.checkpoint import load_backbone_checkpoint
    from wan.lora import apply_lora

    trace = load_fixture("gen_native_lora.pt")
    cfg = trace["config"]
    model = CausalWanModel(WanModelConfig.from_dict(cfg["model"])).eval().to_inference_dtype(torch.bfloat16)
    load_backbone_checkpoint(model, FIXTURES / cfg["files"]["generator"])
    model = apply_lora(model, FIXTURES / cfg["files"]["lora"], cfg["lora"]["rank"], cfg["lora"]["alpha"], merge=False)
    rcfg = rollout_config(trace, FIXTURES)
    errors, *_ = replay_calls(model, rcfg, build_method(rcfg, model, tuple(trace["noise"].shape[2:])), trace)
    assert max(errors) <= 2 * UNIT_ROUNDOFF[torch.bfloat16] * trace["step_x0"].abs().max().item()

"""Causal Wan DiT: full-size parameter layout, presets, forward shapes and one reference call."""
import ast
import json
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, load_fixture
from pipeline.scheduler import FlowMatchSchedule
from wan.block_attention import BlockAttention, BlockContext
from wan.checkpoint import load_backbone_checkpoint
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset
from wan.rope import Rope3D

BACKBONE_SOURCES = ["model.py", "rope.py", "kv_cache.py", "context_layout.py", "block_attention.py", "checkpoint.py", "lora.py"]


def first_block_attention(model: CausalWanModel, num_frames: int, latent_hw: tuple[int, int]) -> BlockAttention:
    """The first block of a video: it attends only itself, at positions 0 .. num_frames - 1."""
    positions = list(range(num_frames))
    context = BlockContext(tuple(positions), [], positions, positions)
    grid = LatentGeometry.of(model.cfg, *latent_hw).grid_hw
    return BlockAttention(context, Rope3D(model.cfg.head_dim, model.cfg.rope_max_positions), grid)


def test_full_size_model_matches_manifest_name_by_name_shape_by_shape():
    manifest = json.loads((FIXTURES / "manifest_causal_dit_1.3b.json").read_text())
    with torch.device("meta"):
        model = CausalWanModel(model_preset("wan2.1-t2v-1.3b"))
    ours = [(name, list(p.shape)) for name, p in model.state_dict().items()]
    expected = [(e["name"], e["shape"]) for e in manifest["entries"]]
    assert len(ours) == manifest["num_entries"] == 825
    assert ours == expected  # same names in the same order, same shapes
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"] == 1_418_996_800
    assert len(list(model.buffers())) == 0


def test_full_size_preset_equals_manifest_config():
    manifest = json.loads((FIXTURES / "manifest_causal_dit_1.3b.json").read_text())
    cfg = model_preset("wan2.1-t2v-1.3b")
    assert WanModelConfig.from_dict(manifest["config"]) == cfg
    assert cfg.head_dim == 128 and LatentGeometry.of(cfg, 60, 104).tokens_per_frame == 1560


def test_demo_preset_equals_fixture_generator_config():
    trace = load_fixture("gen_native_sink1.pt")
    cfg = model_preset("demo")
    assert WanModelConfig.from_dict(trace["config"]["model"]) == cfg
    assert LatentGeometry.of(cfg, 8, 8).tokens_per_frame == trace["config"]["tokens_per_frame"] == 16


@pytest.mark.parametrize("latent_hw", [(8, 8), (6, 10)])
def test_demo_forward_gives_block_shape_and_batch_rows_are_independent(latent_hw):
    torch.manual_seed(0)
    model = CausalWanModel(model_preset("demo")).eval()
    prompt = torch.randn(2, 10, model.cfg.text_dim)
    x = torch.randn(2, 3, 16, *latent_hw)  # [B, F, C, H, W]
    timestep = torch.tensor([[1000.0] * 3, [500.0] * 3])
    with torch.no_grad():
        out = model(x, timestep, model.encode_text(prompt), first_block_attention(model, 3, latent_hw))
        second = model(x[1:], timestep[1:], model.encode_text(prompt[1:]), first_block_attention(model, 3, latent_hw))
    assert out.shape == (2, 3, 16, *latent_hw) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out[1:] - second).abs().max() < 1e-5


@pytest.mark.parametrize("role", ["denoise", "recache"])
def test_first_block_call_matches_reference_x0(role):
    """Block 0 attends only itself, so one call checks the network without any cache history."""
    trace = load_fixture("gen_native_sink1.pt")
    model = CausalWanModel(model_preset("demo")).eval()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    if role == "denoise":
        x, timestep, expected = trace["step_input"][0, 0], trace["step_timestep"][0, 0], trace["step_x0"][0, 0]
    else:
        x, timestep, expected = trace["step_x0"][0, -1], trace["recache_timestep_tensor"][0], trace["recache_x0"][0]
    with torch.no_grad():
        flow = model(x, timestep, model.encode_text(trace["prompt_embeds"]), first_block_attention(model, 3, (8, 8)))
    x0 = FlowMatchSchedule(5.0).flow_to_x0(flow, x, timestep)
    assert (x0 - expected).abs().max() < 1e-5


def test_dim_not_divisible_by_heads_raises():
    with pytest.raises(ValueError, match="dim 100 is not divisible by num_heads 12"):
        WanModelConfig(dim=100, num_heads=12)


def test_head_dim_too_small_for_3_axis_rope_raises():
    with pytest.raises(ValueError, match="head_dim 4"):
        WanModelConfig(dim=16, num_heads=4)


def test_unknown_config_key_raises_naming_it():
    with pytest.raises(ValueError, match="num_layer"):
        WanModelConfig.from_dict({"dim": 64, "num_layer": 2})


def test_unknown_preset_raises_listing_presets():
    with pytest.raises(KeyError, match="demo"):
        model_preset("wan2.2")


def test_prompt_longer_than_text_len_raises():
    model = CausalWanModel(model_preset("demo"))
    with pytest.raises(ValueError, match="17 tokens, more than text_len 16"):
        model.encode_text(torch.zeros(1, 17, model.cfg.text_dim))


def test_backbone_sources_hold_no_shape_constants():
    """Widths, depths, head counts and token counts live in wan/model_config.py only.

    Allowed literals: small structural counts (pairs, the 6 modulation vectors, message lengths)
    and the RoPE / sinusoid base 10000.
    """
    wan = Path(__file__).resolve().parents[1] / "wan"
    for name in BACKBONE_SOURCES:
        tree = ast.parse((wan / name).read_text())
        numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)}
        assert all(abs(v) <= 8 or v == 10000 for v in numbers), f"wan/{name} holds numeric literals {sorted(numbers)}"

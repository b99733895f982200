"""LoRA through peft: merged vs unmerged, the merge formula, rank errors, the full-size key layout."""
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer

from conftest import FIXTURES, load_fixture
from pipeline.scheduler import FlowMatchSchedule
from utils.assets import RAG_DOWNLOAD, MissingAssetError
from wan.block_attention import BlockAttention, BlockContext
from wan.checkpoint import CheckpointMismatchError, load_backbone_checkpoint
from wan.lora import LORA_TARGET_MODULES, apply_lora
from wan.model import CausalWanModel
from wan.model_config import model_preset
from wan.rope import Rope3D

LORA_FILE = FIXTURES / "gen_lora.pt"


def base_model() -> CausalWanModel:
    model = CausalWanModel(model_preset("demo")).eval()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    return model


def first_call_x0(model: CausalWanModel, trace: dict) -> torch.Tensor:
    """x0 of the rollout's first denoising call (block 0 attends only itself)."""
    cfg = model.cfg
    context = BlockContext((0, 1, 2), [], [0, 1, 2], [0, 1, 2])
    attn = BlockAttention(context, Rope3D(cfg.head_dim, cfg.rope_max_positions), (4, 4))
    x, t = trace["step_input"][0, 0], trace["step_timestep"][0, 0]
    with torch.no_grad():
        flow = model(x, t, model.encode_text(trace["prompt_embeds"]), attn)
    return FlowMatchSchedule(5.0).flow_to_x0(flow, x, t)


def test_merged_and_unmerged_lora_agree_and_match_the_reference_call():
    trace = load_fixture("gen_native_lora.pt")
    assert trace["config"]["lora"]["rank"] == 4 and trace["config"]["lora"]["alpha"] == 4
    merged = apply_lora(base_model(), LORA_FILE, rank=4, alpha=4)
    unmerged = apply_lora(base_model(), LORA_FILE, rank=4, alpha=4, merge=False)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert sum(isinstance(m, LoraLayer) for m in unmerged.modules()) == 20  # 10 Linear layers x 2 blocks
    x0_merged, x0_unmerged = first_call_x0(merged, trace), first_call_x0(unmerged, trace)
    assert (x0_merged - x0_unmerged).abs().max() < 1e-5
    assert (x0_merged - trace["step_x0"][0, 0]).abs().max() < 1e-5
    # the adapter matters: without it the same call is far off
    assert (first_call_x0(base_model(), trace) - trace["step_x0"][0, 0]).abs().max() > 1e-2


@pytest.mark.parametrize("alpha", [4, 8])
def test_merged_weight_is_base_plus_scale_b_a(alpha):
    lora = load_fixture("gen_lora.pt")["generator_lora"]
    base = base_model().state_dict()
    merged = apply_lora(base_model(), LORA_FILE, rank=4, alpha=alpha).state_dict()
    assert list(merged) == list(base)
    prefix = "base_model.model.blocks.1.cross_attn.v"
    a, b = lora[f"{prefix}.lora_A.weight"], lora[f"{prefix}.lora_B.weight"]  # [4, in], [out, 4]
    expected = base["blocks.1.cross_attn.v.weight"] + (alpha / 4) * (b @ a)
    assert (merged["blocks.1.cross_attn.v.weight"] - expected).abs().max() < 1e-6
    assert torch.equal(merged["blocks.1.cross_attn.v.bias"], base["blocks.1.cross_attn.v.bias"])
    # untargeted parameters are untouched
    assert torch.equal(merged["blocks.1.norm3.weight"], base["blocks.1.norm3.weight"])
    assert torch.equal(merged["head.head.weight"], base["head.head.weight"])


def test_raw_peft_state_dict_file_is_accepted(tmp_path):
    path = tmp_path / "raw_lora.pt"
    torch.save(load_fixture("gen_lora.pt")["generator_lora"], path)
    raw = apply_lora(base_model(), path, rank=4, alpha=4).state_dict()
    wrapped = apply_lora(base_model(), LORA_FILE, rank=4, alpha=4).state_dict()
    assert all(torch.equal(raw[k], wrapped[k]) for k in wrapped)


def test_rank_mismatch_raises_naming_rank_and_alpha():
    with pytest.raises(CheckpointMismatchError) as err:
        apply_lora(base_model(), LORA_FILE, rank=8, alpha=8)
    msg = str(err.value)
    assert str(LORA_FILE) in msg and "LoRA rank 8, alpha 8" in msg
    assert "40 shape-mismatched keys" in msg and "checkpoint (4, 64) vs model (8, 64)" in msg


def test_missing_lora_file_raises_with_download_command(tmp_path):
    with pytest.raises(MissingAssetError) as err:
        apply_lora(base_model(), tmp_path / "longlive_lora.pt", rank=4, alpha=4)
    assert "longlive_lora.pt" in str(err.value) and RAG_DOWNLOAD in str(err.value)


def test_full_size_rank_256_keys_equal_the_manifest():
    """peft injects the adapters into the full-size model built on `meta` (no memory is allocated),
    and get_peft_model_state_dict gives the released file's keys, in order, with their shapes."""
    manifest = json.loads((FIXTURES / "manifest_lora_r256.json").read_text())
    with torch.device("meta"):
        model = CausalWanModel(model_preset("wan2.1-t2v-1.3b"))
    config = LoraConfig(r=manifest["rank"], lora_alpha=manifest["alpha"], lora_dropout=0.0, target_modules=LORA_TARGET_MODULES)
    state = get_peft_model_state_dict(get_peft_model(model, config))
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e["name"], e["shape"]) for e in manifest["entries"]]
    assert len(state) == manifest["num_entries"] == 600
    assert sum(v.numel() for v in state.values()) == manifest["total_parameters"] == 349_962_240

"""Backbone checkpoint loading: the three layouts, FSDP key fragments, strict errors, missing files."""
import re

import pytest
import torch

from conftest import FIXTURES, load_fixture
from utils.assets import RAG_DOWNLOAD, MissingAssetError
from wan.checkpoint import CheckpointMismatchError, load_backbone_checkpoint, normalize_backbone_keys, select_state_dict
from wan.model import CausalWanModel
from wan.model_config import model_preset


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    """{'model.' + name: tensor} of the fixture generator (69 entries)."""
    return load_fixture("gen_generator.pt")["generator"]


def fresh_model() -> CausalWanModel:
    torch.manual_seed(123)
    return CausalWanModel(model_preset("demo"))


def assert_loaded(model: CausalWanModel, reference_state: dict) -> None:
    ours = model.state_dict()
    assert len(ours) == len(reference_state) == 69
    for key, value in reference_state.items():
        assert torch.equal(ours[key.removeprefix("model.")], value), key


def save(tmp_path, name: str, ckpt: dict):
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def test_fixture_generator_loads_strictly():
    model = fresh_model()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    assert_loaded(model, load_fixture("gen_generator.pt")["generator"])


@pytest.mark.parametrize(
    "layout, use_ema",
    [("generator", False), ("generator_ema", True), ("model", False), ("model", True), ("generator_ema", False)],
)
def test_every_layout_loads(tmp_path, reference_state, layout, use_ema):
    path = save(tmp_path, "ckpt.pt", {layout: reference_state})
    model = fresh_model()
    load_backbone_checkpoint(model, path, use_ema=use_ema)
    assert_loaded(model, reference_state)


def test_use_ema_prefers_generator_ema_over_generator(tmp_path, reference_state):
    shifted = {k: v + 1 for k, v in reference_state.items()}
    path = save(tmp_path, "both.pt", {"generator": shifted, "generator_ema": reference_state})
    ema, plain = fresh_model(), fresh_model()
    load_backbone_checkpoint(ema, path, use_ema=True)
    load_backbone_checkpoint(plain, path, use_ema=False)
    assert_loaded(ema, reference_state)
    assert_loaded(plain, shifted)


def test_fsdp_fragments_are_stripped(tmp_path, reference_state):
    # FSDP wraps the root and every block: model._fsdp_wrapped_module.blocks.0._fsdp_wrapped_module.self_attn.q.weight
    wrapped = {
        "model._fsdp_wrapped_module." + re.sub(r"^(blocks\.\d+\.)", r"\1_fsdp_wrapped_module.", k.removeprefix("model.")): v
        for k, v in reference_state.items()
    }
    assert sum("blocks.0._fsdp_wrapped_module." in k for k in wrapped) > 0
    path = save(tmp_path, "fsdp.pt", {"generator": wrapped})
    model = fresh_model()
    load_backbone_checkpoint(model, path)
    assert_loaded(model, reference_state)


def test_normalize_backbone_keys_strips_only_the_prefix_and_fragments():
    state = {"model._fsdp_wrapped_module.blocks.1._fsdp_wrapped_module.ffn.0.weight": 1, "head.head.weight": 2}
    assert list(normalize_backbone_keys(state)) == ["blocks.1.ffn.0.weight", "head.head.weight"]


def test_missing_key_raises_naming_file_key_and_count(tmp_path, reference_state):
    state = dict(reference_state)
    del state["model.blocks.1.ffn.2.bias"], state["model.head.modulation"]
    path = save(tmp_path, "missing.pt", {"generator": state})
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checkpoint(fresh_model(), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "2 missing keys: blocks.1.ffn.2.bias, head.modulation" in msg
    assert "unexpected" not in msg and "shape-mismatched" not in msg


def test_unexpected_key_raises_naming_file_key_and_count(tmp_path, reference_state):
    state = dict(reference_state, **{"model.blocks.2.ffn.0.weight": torch.zeros(128, 64)})
    path = save(tmp_path, "unexpected.pt", {"generator": state})
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checkpoint(fresh_model(), path)
    msg = str(err.value)
    assert str(path) in msg and "1 unexpected keys: blocks.2.ffn.0.weight" in msg and "missing" not in msg


def test_shape_mismatch_raises_naming_file_key_both_shapes_and_count(tmp_path, reference_state):
    state = dict(reference_state, **{"model.head.head.weight": torch.zeros(64, 32)})
    path = save(tmp_path, "shape.pt", {"generator": state})
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checkpoint(fresh_model(), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 shape-mismatched keys: head.head.weight: checkpoint (64, 32) vs model (64, 64)" in msg


def test_long_key_lists_are_truncated_with_a_count(tmp_path, reference_state):
    state = {k: v for k, v in reference_state.items() if ".blocks.1." not in k}
    path = save(tmp_path, "half.pt", {"generator": state})
    with pytest.raises(CheckpointMismatchError, match=r"27 missing keys: blocks\.1\.[^\n]* \(\+22 more\)"):
        load_backbone_checkpoint(fresh_model(), path)


def test_use_ema_without_generator_ema_raises_naming_the_fix(tmp_path, reference_state):
    path = save(tmp_path, "plain.pt", {"generator": reference_state})
    with pytest.raises(CheckpointMismatchError, match="use_ema=false") as err:
        load_backbone_checkpoint(fresh_model(), path, use_ema=True)
    assert str(path) in str(err.value) and "generator_ema" in str(err.value)


def test_unknown_top_level_layout_raises_listing_accepted_keys(tmp_path):
    path = save(tmp_path, "odd.pt", {"state": {"a": torch.zeros(1)}, "step": 3})
    with pytest.raises(CheckpointMismatchError, match=r"expected one of \['generator', 'generator_ema', 'model'\]"):
        load_backbone_checkpoint(fresh_model(), path)


def test_raw_state_dict_is_accepted(reference_state):
    assert select_state_dict(reference_state, "raw.pt", use_ema=False) is reference_state


def test_missing_file_raises_with_download_command(tmp_path):
    path = tmp_path / "checkpoints" / "causal_forcing.pt"
    with pytest.raises(MissingAssetError) as err:
        load_backbone_checkpoint(fresh_model(), path)
    assert str(path) in str(err.value) and RAG_DOWNLOAD in str(err.value)
    assert "python -m utils.download <backbone>" in str(err.value)

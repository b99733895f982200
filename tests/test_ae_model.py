"""Retrieval autoencoder: released checkpoint layout, reference descriptors, shapes, config, errors."""
import warnings

import pytest
import torch

from ae.model import (
    AECheckpointError,
    AEConfig,
    AEInputShapeError,
    RetrievalAutoencoder,
    load_retrieval_autoencoder,
    reference_init_,
)
from conftest import FIXTURES, load_fixture
from utils.assets import MissingAssetError
from utils.config import ConfigError


@pytest.fixture(scope="module")
def fixture_ae():
    return load_retrieval_autoencoder(FIXTURES / "gen_ae.pt").eval()


def test_fixture_checkpoint_builds_config_from_its_training_config(fixture_ae):
    cfg = fixture_ae.cfg
    assert (cfg.in_channels, cfg.spatial_h, cfg.spatial_w, cfg.latent_dim, cfg.hidden_dims) == (16, 8, 8, 32, (8, 16))


def test_parameter_names_and_shapes_match_released_layout(fixture_ae):
    released = load_fixture("gen_ae.pt")["model"]
    ours = fixture_ae.state_dict()
    assert list(ours) == list(released)
    assert all(ours[k].shape == released[k].shape for k in released)


def test_encode_reproduces_reference_descriptors():
    model = load_retrieval_autoencoder(FIXTURES / "gen_ae.pt").eval()
    trace = load_fixture("gen_latentmem_ae.pt")
    frames = trace["output"][0]  # [60, 16, 8, 8]
    with torch.no_grad():
        batched = model.encode(frames)
        one_by_one = torch.cat([model.encode(f[None]) for f in frames])
    assert batched.shape == (60, 32)
    assert (batched - trace["descriptors"][0]).abs().max() < 5e-5
    assert (one_by_one - trace["descriptors"][0]).abs().max() < 5e-5


def test_full_size_shapes_and_unit_norm_descriptors():
    torch.manual_seed(0)
    model = RetrievalAutoencoder(AEConfig()).eval()
    x = torch.randn(2, 16, 60, 104)
    with torch.no_grad():
        x_rec, z = model(x)
        v = model.encode(x)
    assert model.cfg.bottleneck_hw == (8, 13)
    assert x_rec.shape == (2, 16, 60, 104)
    assert z.shape == v.shape == (2, 1024)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(v, z / z.norm(dim=-1, keepdim=True), atol=1e-6)


def test_group_norm_groups_follow_32_16_8_4_1_rule():
    model = RetrievalAutoencoder(AEConfig(spatial_h=8, spatial_w=8, latent_dim=8, hidden_dims=(12, 48, 40)))
    norms = {m.num_channels: m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert norms == {12: 4, 48: 16, 40: 8}
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))


def test_residual_blocks_start_as_identity():
    model = RetrievalAutoencoder(AEConfig(spatial_h=8, spatial_w=8, latent_dim=8, hidden_dims=(8, 16)))
    block = model.encoder.conv_stack[3]
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (2, 16, 8, 9), (16, 8, 8)])
def test_encode_rejects_frames_of_the_wrong_shape(fixture_ae, shape):
    with pytest.raises(AEInputShapeError, match=r"\[N, 16, 8, 8\].*got"):
        fixture_ae.encode(torch.zeros(shape))


def test_decode_rejects_wrong_embedding_width(fixture_ae):
    with pytest.raises(AEInputShapeError, match=r"\[N, 32\]"):
        fixture_ae.decode(torch.zeros(2, 31))


def test_from_dict_rejects_unknown_keys_and_defaults_missing_ones():
    with pytest.raises(ConfigError, match=r"unknown AE config keys \['lr'\]"):
        AEConfig.from_dict({"latent_dim": 64, "hidden_dims": [4, 8], "lr": 3e-4})
    with pytest.raises(ConfigError, match="hidden_dims"):
        AEConfig.from_dict({"hidden_dims": []})
    cfg = AEConfig.from_dict({"latent_dim": 64, "hidden_dims": [4, 8]})
    assert cfg == AEConfig(latent_dim=64, hidden_dims=(4, 8))
    assert (cfg.in_channels, cfg.spatial_h, cfg.spatial_w) == (16, 60, 104)


def test_from_training_config_reads_only_the_architecture_keys():
    cfg = AEConfig.from_training_config({"latent_dim": 64, "hidden_dims": [4, 8], "lr": 3e-4, "smooth_weight": 1.0})
    assert cfg == AEConfig(latent_dim=64, hidden_dims=(4, 8))


def test_reference_init_zeroes_biases_and_keeps_residual_blocks_identity():
    torch.manual_seed(0)
    model = reference_init_(RetrievalAutoencoder(AEConfig(spatial_h=8, spatial_w=8, latent_dim=8, hidden_dims=(8, 16))))
    biases = {n: p for n, p in model.named_parameters() if n.endswith(".bias") and "norm" not in n and p.ndim == 1}
    conv_linear = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert conv_linear and all(torch.count_nonzero(biases[f"{n}.bias"]) == 0 for n in conv_linear)
    fc = model.encoder.fc.weight  # Xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert fc.abs().max() <= (6 / (fc.shape[0] + fc.shape[1])) ** 0.5
    first = model.encoder.conv_stack[0].weight  # Kaiming-normal, fan_out: std sqrt(2 / (c_out * 9))
    assert first.std().item() == pytest.approx((2 / (first.shape[0] * 9)) ** 0.5, rel=0.15)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(model.encoder.conv_stack[3](x), x)


def test_loader_reads_training_config_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_retrieval_autoencoder(FIXTURES / "gen_ae.pt")


def test_loader_dtype_and_device_arguments():
    model = load_retrieval_autoencoder(FIXTURES / "gen_ae.pt", device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_missing_checkpoint_raises_missing_asset_error(tmp_path):
    with pytest.raises(MissingAssetError, match="(?s)retrieval autoencoder checkpoint.*python -m utils.download"):
        load_retrieval_autoencoder(tmp_path / "ae_latent_mem.pt")


def test_strict_load_lists_missing_unexpected_and_shape_mismatches(tmp_path):
    ckpt = load_fixture("gen_ae.pt")
    state = ckpt["model"]
    del state["decoder.final.1.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["encoder.fc.weight"] = torch.zeros(33, 16)
    path = tmp_path / "bad_ae.pt"
    torch.save(ckpt, path)
    with pytest.raises(AECheckpointError) as err:
        load_retrieval_autoencoder(path)
    message = str(err.value)
    assert "bad_ae.pt" in message
    assert "decoder.final.1.bias" in message and "encoder.extra.weight" in message
    assert "encoder.fc.weight: checkpoint [33, 16] vs model [32, 16]" in message


def test_non_strict_load_warns_about_missing_keys_but_loads_the_rest(tmp_path):
    ckpt = load_fixture("gen_ae.pt")
    decoder_keys = [k for k in ckpt["model"] if k.startswith("decoder.")]
    for k in decoder_keys:
        del ckpt["model"][k]
    path = tmp_path / "encoder_only.pt"
    torch.save(ckpt, path)
    with pytest.raises(AECheckpointError):
        load_retrieval_autoencoder(path)
    with pytest.warns(UserWarning, match="decoder.fc.0.weight"):
        model = load_retrieval_autoencoder(path, strict=False)
    assert torch.equal(model.encoder.fc.weight, ckpt["model"]["encoder.fc.weight"])


def test_checkpoint_without_model_or_config_is_rejected(tmp_path):
    path = tmp_path / "raw_state_dict.pt"
    torch.save(load_fixture("gen_ae.pt")["model"], path)
    with pytest.raises(AECheckpointError, match="raw_state_dict.pt.*'model'.*'config'"):
        load_retrieval_autoencoder(path)

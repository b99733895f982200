"""Collapse monitor (ae/collapse.py): exact numbers on hand cases, batch-independence, and in the
training loop: it warns on a collapsed model and stays quiet on a healthy one."""
import logging
import math
from pathlib import Path

import pytest
import torch

import ae.train
from ae.collapse import COLLAPSE_RATIO, EmbeddingSpread, embedding_stats, is_collapsed, warn_if_collapsed
from ae.model import RetrievalAutoencoder
from ae.train import AETrainConfig, train_autoencoder
from toydatasets.make_toy_latents import regime_config, write_toy_dataset
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_identical_embeddings_are_collapsed():
    stats = embedding_stats(torch.tensor([[3.0, 4.0]]).repeat(5, 1))
    assert stats["mean_cosine"] == pytest.approx(1.0) and stats["const_to_var"] == math.inf
    assert is_collapsed(stats)


def test_orthonormal_embeddings_by_hand():
    # mean = (1/4, 1/4, 1/4, 1/4): |mean| = 1/2; mean |z - mean|^2 = 1 - 1/4
    stats = embedding_stats(torch.eye(4))
    assert stats["mean_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert stats["const_to_var"] == pytest.approx(0.5 / math.sqrt(0.75))
    assert not is_collapsed(stats)


def test_one_point_plus_small_noise_is_collapsed_and_scale_free():
    gen = torch.Generator().manual_seed(0)
    z = torch.zeros(200, 32)
    z[:, 0] = 10.0
    z += 0.05 * torch.randn(z.shape, generator=gen)
    stats = embedding_stats(z)
    assert stats["const_to_var"] > COLLAPSE_RATIO and stats["mean_cosine"] > 0.999
    assert embedding_stats(7 * z)["const_to_var"] == pytest.approx(stats["const_to_var"])


def test_running_sums_equal_one_pass():
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    spread = EmbeddingSpread()
    for part in z.split(7):
        spread.update(part)
    assert spread.stats() == pytest.approx(embedding_stats(z), rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        EmbeddingSpread().stats()


def test_warning_names_the_numbers_only_when_collapsed(caplog):
    with caplog.at_level(logging.WARNING, logger="ae.collapse"):
        assert not warn_if_collapsed({"mean_cosine": 0.5, "const_to_var": 1.2}, epoch=3)
        assert caplog.records == []
        assert warn_if_collapsed({"mean_cosine": 0.9999, "const_to_var": 250.0}, epoch=4)
    assert "epoch 4" in caplog.text and "250.0" in caplog.text and "smooth_weight" in caplog.text


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    cfg = regime_config("cuts", num_videos=6, frames=32)
    return write_toy_dataset(cfg, tmp_path_factory.mktemp("toy"), progress=False)


def tiny(toy_dir: Path, out: Path, *extra: str) -> AETrainConfig:
    # hidden [32, 64] as the experiment: narrower encoders end in a GroupNorm of one channel per group,
    # whose spatial mean is the same for every frame, so they start out collapsed
    overrides = [f"data_dir={toy_dir}", f"output_dir={out}", "chunks_per_video=4",
                 "batch_size=8", "epochs=2", "delta_weight=0", "smooth_weight=0", "reference_init=false", *extra]
    return load_config(AETrainConfig, ROOT / "ae" / "configs" / "toy_experiment.yaml", overrides)


def collapsed_model(cfg: AETrainConfig) -> RetrievalAutoencoder:
    """Every frame embeds to the encoder's bias: the head's weights are zero and frozen."""
    torch.manual_seed(cfg.seed)
    model = RetrievalAutoencoder(cfg.model_config())
    torch.nn.init.zeros_(model.encoder.fc.weight)
    model.encoder.fc.weight.requires_grad_(False)
    return model


def test_training_warns_every_epoch_of_a_collapsed_model(toy_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ae.train, "build_model", collapsed_model)
    with caplog.at_level(logging.WARNING, logger="ae.collapse"):
        result = train_autoencoder(tiny(toy_dir, tmp_path))
    assert [h["embedding"]["const_to_var"] > COLLAPSE_RATIO for h in result.history] == [True, True]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["epoch 0", "epoch 1"]


def test_training_a_healthy_model_stays_quiet(toy_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ae.collapse"):
        result = train_autoencoder(tiny(toy_dir, tmp_path))
    assert caplog.records == []
    assert all(h["embedding"]["const_to_var"] < 3 and h["embedding"]["mean_cosine"] < 0.9 for h in result.history)

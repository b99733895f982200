import math

import pytest
import torch

from ae.losses import (
    LossConfig,
    autoencoder_loss_terms,
    delta_loss,
    reconstruction_loss,
    seq_delta_loss,
    smooth_loss,
)


def seq(*vectors) -> torch.Tensor:
    """One chunk of embeddings: [1, S, D]."""
    return torch.tensor([vectors], dtype=torch.float32)


def test_delta_hinge_active_above_margin_only():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # cos 1, 1/sqrt(2), 0
    out = delta_loss(a, b, weight=2.0, margin=0.5)
    expected = torch.tensor([2 * 0.5, 2 * (1 / math.sqrt(2) - 0.5), 0.0])
    torch.testing.assert_close(out, expected)
    assert delta_loss(a[1], b[1], weight=1.0, margin=0.85).item() == 0.0  # cos 0.707 < m: inactive


def test_delta_ignores_embedding_scale():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])  # cos 0.8
    torch.testing.assert_close(delta_loss(10 * a, 0.1 * b, 1.0, 0.5), delta_loss(a, b, 1.0, 0.5))


def test_seq_delta_hand_computed_with_window_clipped_to_s_minus_1():
    z = seq([1.0, 0.0], [2.0, 0.0], [0.0, 1.0])  # S = 3, w = 3 -> w̄ = 2
    # τ=1: pairs (v2,v1) cos 1 -> 0.15, (v3,v2) cos 0 -> 0, mean 0.075; τ=2: (v3,v1) cos 0 -> 0
    out = seq_delta_loss(z, weight=1.0, margin=0.85, window=3)
    torch.testing.assert_close(out, torch.tensor([(0.075 + 0.0) / 2]))
    # w = 1 keeps only τ = 1; λ_Δ scales linearly
    torch.testing.assert_close(seq_delta_loss(z, weight=2.0, margin=0.85, window=1), torch.tensor([0.15]))


def test_seq_delta_zero_when_all_pairs_below_margin():
    z = seq([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0])
    assert seq_delta_loss(z, 1.0, 0.85, 3).item() == 0.0


def test_seq_delta_single_frame_is_zero():
    assert seq_delta_loss(seq([1.0, 0.0]), 1.0, 0.85, 3).tolist() == [0.0]


def test_smooth_hand_computed():
    z = seq([0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 2.0])
    # second differences: [1, 0] (norm 1) and [2, 2] (norm sqrt 8)
    out = smooth_loss(z, weight=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5 * (1 + math.sqrt(8)) / 2]))


@pytest.mark.parametrize("s", [1, 2])
def test_smooth_zero_for_fewer_than_three_frames(s):
    z = torch.randn(2, s, 4)
    assert smooth_loss(z, 1.0).tolist() == [0.0, 0.0]


def test_reconstruction_is_per_chunk_mse():
    x = torch.zeros(2, 3, 2, 4, 4)
    x_rec = torch.cat([torch.full((1, 3, 2, 4, 4), 2.0), torch.full((1, 3, 2, 4, 4), 0.5)])
    torch.testing.assert_close(reconstruction_loss(x_rec, x), torch.tensor([4.0, 0.25]))


def test_total_is_weighted_sum_of_named_terms_per_chunk():
    z = torch.cat([seq([1.0, 0.0], [2.0, 0.0], [0.0, 1.0]), seq([0.0, 0.0], [1.0, 0.0], [3.0, 0.0])])  # [2, 3, 2]
    x = torch.zeros(2, 3, 1, 2, 2)
    x_rec = torch.ones(2, 3, 1, 2, 2)
    w = LossConfig(rec_weight=2.0, delta_weight=1.0, delta_window=3, delta_margin=0.85, smooth_weight=0.5)
    terms = autoencoder_loss_terms(x, x_rec, z, w)
    assert set(terms) == {"rec", "seqdelta", "smooth", "total"}
    torch.testing.assert_close(terms["rec"], torch.tensor([1.0, 1.0]))
    # chunk 2: τ=1 pairs (v2,v1) zero vector -> cos 0, (v3,v2) cos 1 -> 0.15; τ=2 (v3,v1) -> 0
    torch.testing.assert_close(terms["seqdelta"], torch.tensor([0.0375, 0.0375]))
    # second differences: [-3, 1] (norm sqrt 10) and [1, 0]
    torch.testing.assert_close(terms["smooth"], torch.tensor([0.5 * math.sqrt(10), 0.5 * 1.0]))
    torch.testing.assert_close(terms["total"], 2.0 * terms["rec"] + terms["seqdelta"] + terms["smooth"])


def test_zero_weights_leave_reconstruction_only():
    z = torch.randn(3, 8, 16)
    x, x_rec = torch.randn(3, 8, 2, 4, 4), torch.randn(3, 8, 2, 4, 4)
    terms = autoencoder_loss_terms(x, x_rec, z, LossConfig(delta_weight=0.0, smooth_weight=0.0))
    torch.testing.assert_close(terms["total"], reconstruction_loss(x_rec, x))


def test_bfloat16_embeddings_give_float32_terms():
    z = torch.randn(2, 8, 16)
    terms32 = autoencoder_loss_terms(torch.zeros(2, 8, 1, 2, 2), torch.ones(2, 8, 1, 2, 2), z, LossConfig(delta_margin=0.0))
    terms16 = autoencoder_loss_terms(
        torch.zeros(2, 8, 1, 2, 2), torch.ones(2, 8, 1, 2, 2, dtype=torch.bfloat16), z.bfloat16(), LossConfig(delta_margin=0.0)
    )
    assert all(t.dtype == torch.float32 for t in terms16.values())
    torch.testing.assert_close(terms16["total"], terms32["total"], atol=0.05, rtol=0.02)

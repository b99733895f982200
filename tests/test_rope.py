"""3-axis RoPE: float32 tables applied on (even, odd) pairs against a float64 complex rotation."""
import pytest
import torch

from wan.rope import Rope3D, apply_rope, grid_position


def complex128_rotation(x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The float64 reference: x as complex pairs times e^{i angle}, angles of the three axes concatenated."""
    pairs = head_dim // 2
    hw = pairs // 3
    axes = []
    for pos, axis_pairs in ((t, pairs - 2 * hw), (h, hw), (w, hw)):
        inv = 1.0 / torch.pow(10000.0, torch.arange(0, 2 * axis_pairs, 2, dtype=torch.float64) / (2 * axis_pairs))
        axes.append(pos.to(torch.float64)[..., None] * inv)
    angles = torch.cat(axes, dim=-1)  # [S, d/2]
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)[None, :, None]).flatten(-2)


@pytest.mark.parametrize("head_dim", [6, 16, 128])
def test_float32_rotation_matches_the_float64_complex_rotation(head_dim):
    rope = Rope3D(head_dim, 1024)
    grid = (3, 5)
    positions = [0, 7, 45, 1000]
    x = torch.randn(2, len(positions) * 15, 4, head_dim, generator=torch.Generator().manual_seed(0))
    ours = rope.rotate(x, positions, grid)
    t = torch.tensor(positions).repeat_interleave(15)
    h, w = grid_position(torch.arange(15).repeat(len(positions)), grid)
    reference = complex128_rotation(x, t, h, w, head_dim)
    assert ours.dtype == torch.float32
    # float32 cos/sin and products: about one float32 roundoff of |x|
    assert (ours.double() - reference).abs().max() < 5e-7 * x.abs().max()  # measured 1.0e-7
    assert torch.allclose(ours.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)  # a rotation keeps the norm


def test_angles_built_once_rotate_like_rotate_and_write_into_a_buffer():
    rope = Rope3D(16, 64)
    grid = (2, 2)
    x = torch.randn(1, 12, 2, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    angles = rope.frame_angles([3, 4, 5], grid)
    assert angles.cos.shape == (1, 12, 1, 8) and angles.cos.dtype == torch.float32
    assert torch.equal(apply_rope(x, angles), rope.rotate(x, [3, 4, 5], grid))
    assert apply_rope(x, angles).dtype == torch.bfloat16
    out = torch.empty(1, 20, 2, 16, dtype=torch.bfloat16)
    apply_rope(x, angles, out=out[:, 8:])
    assert torch.equal(out[:, 8:], apply_rope(x, angles))
    t = torch.tensor([3, 4, 5]).repeat_interleave(4)[None]
    h, w = grid_position(torch.arange(4).repeat(3)[None], grid)
    assert torch.equal(rope.rotate_tokens(x, t, h, w), apply_rope(x, angles))


def test_rotation_checks_token_counts():
    rope = Rope3D(16, 64)
    with pytest.raises(ValueError, match="12 tokens but 2 frames of 2x2"):
        rope.rotate(torch.zeros(1, 12, 2, 16), [0, 1], (2, 2))
    with pytest.raises(ValueError, match="8 tokens but angles for 12"):
        apply_rope(torch.zeros(1, 8, 2, 16), rope.frame_angles([0, 1, 2], (2, 2)))

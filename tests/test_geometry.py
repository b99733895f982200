"""wan/geometry.py: latent frame -> patch grid -> tokens, and latent -> video frame counts."""
import pytest

from conftest import load_fixture
from wan.geometry import LatentGeometry
from wan.model_config import model_preset


def test_full_size_frame_is_30_by_52_patches_of_1560_tokens():
    geo = LatentGeometry.of(model_preset("wan2.1-t2v-1.3b"), 60, 104)
    assert geo.frame_shape == (16, 60, 104)
    assert geo.grid_hw == (30, 52) and geo.tokens_per_frame == 1560
    assert geo.tokens(12) == 18720  # the 12-frame attention window


def test_demo_frame_matches_the_fixture_token_count():
    trace = load_fixture("gen_native_sink1.pt")
    assert LatentGeometry.of(model_preset("demo"), 8, 8).tokens_per_frame == trace["config"]["tokens_per_frame"] == 16


def test_latent_frames_decode_to_one_plus_four_per_extra_frame():
    assert [LatentGeometry.video_frames(f) for f in (1, 2, 21, 120)] == [1, 5, 81, 477]


def test_frame_not_a_multiple_of_the_patch_is_rejected():
    with pytest.raises(ValueError, match="7 x 8 is not a multiple of the patch size 2 x 2"):
        LatentGeometry.of(model_preset("demo"), 7, 8)

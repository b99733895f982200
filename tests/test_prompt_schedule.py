"""Prompt schedules and ∞-RoPE's one-line prompt syntax, against the official parser's recorded results."""
import pytest

from conftest import load_fixture
from pipeline.prompt_schedule import PromptSchedule, Segment, parse_infrope_prompt


@pytest.mark.parametrize("name", ["gen_single_sink1.pt", "gen_switch_sink1.pt", "gen_switch_w12_sink1.pt"])
def test_parser_and_blocks_reproduce_the_official_scene_events(name):
    trace = load_fixture(f"infrope/{name}")
    schedule = parse_infrope_prompt(trace["prompt"], frames_per_block=3)
    assert schedule.prompts == trace["scene_prompts"]
    blocks = schedule.blocks(trace["noise"].shape[1], 3)
    assert [b.scene for b in blocks] == trace["block_scene"]
    assert [b.boundary for b in blocks] == trace["block_flush"]
    assert [b.cut for b in blocks] == trace["block_scene_cut"]
    assert [b.index for b in blocks if b.boundary] == trace["scene_block_boundaries"]
    assert [b.index for b in blocks if b.cut] == trace["scene_cut_boundaries"]


def test_official_cut_comes_from_the_scene_that_ends_the_corrected_one_from_the_marked_scene():
    line = "scene A[3s] | scene B[3s#] | scene C[3s]"
    official = parse_infrope_prompt(line, frames_per_block=3)
    corrected = parse_infrope_prompt(line, frames_per_block=3, cut_from_ending_scene=False)
    assert [s.cut for s in official.segments] == [False, False, True]
    assert [s.cut for s in corrected.segments] == [False, True, False]


def test_durations_default_length_and_subtitles():
    schedule = parse_infrope_prompt("a cat[10s] | a dog ; woof | a bird[0.1s] | end", frames_per_block=3)
    # 10 s * 16 fps / (4 * 3) = 13.3 -> 13 blocks; no duration -> 14; tiny durations -> at least 1
    assert schedule.segments == (Segment("a cat", 0), Segment("a dog", 13), Segment("a bird", 27), Segment("end", 28))
    assert parse_infrope_prompt("one prompt", frames_per_block=3) == PromptSchedule.single("one prompt")


def test_segments_starting_after_the_video_never_play():
    blocks = parse_infrope_prompt("a[3s] | b[3s]", frames_per_block=3).blocks(num_frames=9, frames_per_block=3)
    assert [(b.scene, b.boundary) for b in blocks] == [(0, False), (0, False), (0, False)]


def test_empty_scene_and_bad_starts_raise():
    with pytest.raises(ValueError, match="empty scene"):
        parse_infrope_prompt("a | [3s#] | c", frames_per_block=3)
    with pytest.raises(ValueError, match="must begin at 0 and increase"):
        PromptSchedule((Segment("a", 0), Segment("b", 0)))

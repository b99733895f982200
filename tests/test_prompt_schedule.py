"""Prompt schedules: ∞-RoPE's one-line syntax and LongLive's JSONL + switch_frame_indices, against the official
parsers' recorded results, and bad schedules."""
import json

import pytest

from conftest import load_fixture
from pipeline.prompt_schedule import (PromptFormat, PromptSchedule, ScheduleError, Segment, parse_infrope_prompt,
                                      parse_longlive_line)


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


@pytest.mark.parametrize("name", ["gen_switch_gsink.pt", "gen_early_lora_gsink.pt"])
def test_longlive_indices_switch_at_the_first_block_at_or_after_them(name):
    trace = load_fixture(f"longlive_switch/{name}")
    line = json.dumps({"prompts": trace["segment_prompts"]})
    schedule = parse_longlive_line(line, trace["switch_frame_indices"], frames_per_block=3)
    assert schedule.prompts == trace["segment_prompts"]
    assert [s.start_block * 3 for s in schedule.segments[1:]] == trace["switch_start_frames"]  # 14 -> 15, 4 -> 6
    blocks = schedule.blocks(trace["noise"].shape[1], 3)
    assert [b.scene for b in blocks] == trace["block_segment"]
    assert [b.boundary for b in blocks] == trace["block_switch"]


def test_both_formats_give_the_same_schedule():
    longlive = PromptFormat(3, (12, 24)).parse('{"prompts": ["a fox", "an owl", "a hare"]}')
    one_line = PromptFormat(3).parse("a fox[3s] | an owl[3s] | a hare")  # 3 s = 4 blocks of 3 frames
    assert longlive == one_line == PromptSchedule((Segment("a fox", 0), Segment("an owl", 4), Segment("a hare", 8)))
    assert PromptFormat(3).parse("a plain prompt; [not] a schedule") == PromptSchedule.single("a plain prompt; [not] a schedule")


@pytest.mark.parametrize("indices, line, message", [
    ([6, 12], '{"prompts": ["a", "b"]}', r"2 prompts need 1 switch_frame_indices, got 2 \(\[6, 12\]\)"),
    ([12, 6], '{"prompts": ["a", "b", "c"]}', r"must increase: 6 after 12"),
    ([5, 6], '{"prompts": ["a", "b", "c"]}', r"5 and 6 both switch at frame 6"),
    ([0], '{"prompts": ["a", "b"]}', r"switch_frame_indices\[0\] = 0"),
    ([6], '{"prompts": ["a", "  "]}', r"prompt 1 is empty"),
    ([6], '["a", "b"]', r'expected \{"prompts": \[...\]\}'),
    ([6], '{"prompts": ["a", "b"]', r"not a JSON object"),
])
def test_bad_longlive_schedules_name_the_value(indices, line, message):
    with pytest.raises(ScheduleError, match=message):
        parse_longlive_line(line, indices, frames_per_block=3)


def test_a_segment_past_the_end_of_the_video_is_an_error():
    schedule = PromptFormat(3, (12,)).parse('{"prompts": ["a", "b"]}')
    schedule.check_length(num_frames=15, frames_per_block=3)
    with pytest.raises(ScheduleError, match=r"segment 'b' starts at frame 12, past the end of the video \(12 latent frames\)"):
        schedule.check_length(num_frames=12, frames_per_block=3)

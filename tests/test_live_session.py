"""The live session: the block loop one block at a time, typed prompts, streaming decode (live/session.py)."""
import pytest
import torch

from live.session import LiveSession, video_seed
from pipeline.build import build_components
from pipeline.sample import sample_video
from tests.conftest import GeneratorGate, demo_live_parts, text_key

PROMPT, NEW = "A red fox trotting through fresh snow.", "A paper boat drifting down a gutter."
CALLS_PER_BLOCK = 5  # 4 denoising steps + the recache pass (configs/demo_native.yaml)
SWITCH_CALLS = 1  # the window's recache under the new prompt at the switch (kv_recache, one call; pipeline/rollout.py)


@pytest.fixture(scope="module")
def live():
    return demo_live_parts(["num_output_frames=18", f"prompts=[{PROMPT!r}]"])  # 6 blocks of 3 latent frames


@pytest.mark.slow
def test_without_a_typed_prompt_the_latents_equal_inference_first_video(live):
    """Same seed, noise, weights and loop as inference.py's video 0000-0: allowed 1e-6 (the same float32
    operations in the same order; the encoder path differs only in how the embedding is padded)."""
    cfg, parts = live
    session = LiveSession(parts, cfg, PROMPT)
    while not session.done:
        session.step()
    session.close()
    offline = sample_video(PROMPT, video_seed(cfg), cfg, build_components(cfg, torch.device("cpu"), torch.float32, [PROMPT]),
                           progress=False)
    result = session.result()
    assert result.latents.shape == offline.latents.shape == (1, 18, 16, 8, 8)
    assert (result.latents - offline.latents).abs().max() <= 1e-6
    assert [e["keys"] for e in result.context_log] == [e["keys"] for e in offline.context_log]
    assert sum(e["retrieval"] is not None for e in result.context_log) == 0  # 6 blocks: retrieval starts at block 6
    # the streamed blocks are the offline decode of the whole video (wan/vae.py StreamingDecode)
    streamed = torch.cat(session.chunks)
    assert streamed.shape == (1 + 4 * 17, 3, 64, 64)
    assert (streamed - parts.vae.decode(result.latents, chunk_frames=18)[0]).abs().max() <= 1e-6


def test_a_typed_prompt_conditions_every_call_from_the_next_block_on(live):
    cfg, parts = live
    gate = GeneratorGate(parts.generator)
    try:
        session = LiveSession(parts, cfg, PROMPT)
        first = [session.step() for _ in range(2)]
        session.set_prompt("an abandoned draft")
        session.set_prompt(f"  {NEW} ")  # the last prompt set before a block wins; whitespace is trimmed
        rest = [session.step() for _ in range(4)]
        session.close()
    finally:
        gate.remove()
    assert [(u.block.index, u.block.scene, u.block.boundary, u.prompt) for u in first + rest[:2]] == [
        (0, 0, False, PROMPT), (1, 0, False, PROMPT), (2, 1, True, NEW), (3, 1, False, NEW)]
    assert [(s.prompt, s.start_block) for s in session.segments] == [(PROMPT, 0), (NEW, 2)]
    assert [e["scene"] for e in session.rollout.context_log] == [0, 0, 1, 1, 1, 1]
    assert len(gate.texts) == 6 * CALLS_PER_BLOCK + SWITCH_CALLS
    old, new = text_key(parts, PROMPT), text_key(parts, NEW)
    assert not torch.equal(old, new)
    for call, text in enumerate(gate.texts):
        assert torch.equal(text, old if call < 2 * CALLS_PER_BLOCK else new), f"call {call}"


def test_repeating_the_playing_prompt_starts_no_segment_and_empty_prompts_are_refused(live):
    cfg, parts = live
    session = LiveSession(parts, cfg, PROMPT)
    session.step()
    session.set_prompt(PROMPT)
    assert session.next_block().boundary is False and len(session.rollout.texts) == 1
    with pytest.raises(ValueError, match="prompt is empty"):
        session.set_prompt("   ")
    while not session.done:
        session.step()
    with pytest.raises(RuntimeError, match="the video is finished \\(6 blocks\\)"):
        session.step()
    session.close()


def retrieved_frames_after_switch(cut: bool) -> tuple[LiveSession, list[list[int]]]:
    """A 12-block demo latentmem video with the `global` memory policy, NEW typed after block 1 -> (the session,
    the frames each retrieving block retrieved)."""
    cfg, parts = demo_live_parts(["num_output_frames=36", f"prompts=[{PROMPT!r}]", "model_kwargs.memory_switch_policy=global"])
    session = LiveSession(parts, cfg, PROMPT)
    session.step(), session.step()
    session.set_prompt(NEW, cut=cut)
    while not session.done:
        session.step()
    session.close()
    log = session.result().extras["retrieval_log"]
    return session, [e["selected_frames"][0] for e in log]


@pytest.mark.slow
def test_a_prompt_sent_with_a_hard_cut_starts_a_scene_that_never_retrieves_what_came_before():
    session, retrieved = retrieved_frames_after_switch(cut=True)
    assert [(s.prompt, s.start_block, s.cut) for s in session.segments] == [(PROMPT, 0, False), (NEW, 2, True)]
    switch = session.rollout.context_log[2]["switch"]
    assert switch["cut"] is True and switch["segment"] == 1
    assert retrieved and all(f >= 6 for frames in retrieved for f in frames)  # frame 6 is block 2's first
    # the same video without the cut: the `global` policy retrieves frames of the first segment
    _, without_cut = retrieved_frames_after_switch(cut=False)
    assert any(f < 6 for frames in without_cut for f in frames)


def test_the_playing_prompt_with_a_cut_starts_a_segment(live):
    cfg, parts = live
    session = LiveSession(parts, cfg, PROMPT)
    session.step()
    session.set_prompt(PROMPT, cut=True)
    block = session.next_block()
    assert (block.boundary, block.cut, block.scene) == (True, True, 1) and session.segments[-1].cut
    session.close()

"""Saving a live video mid-stream in the inference output format (live/save.py)."""
import calendar
import json

import pytest
import torch

from live.save import free_stem, save_session
from live.session import LiveSession
from tests.conftest import demo_live_parts
from utils.video_io import read_video, to_uint8_frames

PROMPT, NEW = "A red fox trotting through fresh snow.", "A paper boat drifting down a gutter."


def test_free_stem_is_the_utc_second_with_a_counter(tmp_path):
    clock = calendar.timegm((2026, 12, 1, 16, 5, 9))
    assert free_stem(tmp_path, clock) == "live-20261201-160509"
    (tmp_path / "live-20261201-160509.json").write_text("{}")
    (tmp_path / "live-20261201-160509-2.mp4").write_bytes(b"")
    assert free_stem(tmp_path, clock) == "live-20261201-160509-3"


def test_save_mid_stream_writes_the_streamed_frames_and_the_segments(tmp_path):
    cfg, parts = demo_live_parts(["num_output_frames=18", f"prompts=[{PROMPT!r}]", f"output_folder={tmp_path}",
                                  "save_latents=false"])
    session = LiveSession(parts, cfg, PROMPT)
    with pytest.raises(ValueError, match="no block has been generated yet"):
        save_session(session, cfg)
    session.step()
    session.set_prompt(NEW)
    session.step()
    session.set_prompt("typed but not yet generated")  # a pending prompt is no segment of the saved video
    files = save_session(session, cfg)
    session.close()
    assert [p.name for p in files.all()] == [f"{files.stem}{s}" for s in (".mp4", ".context.json", ".context.png", ".json")]
    assert all(p.exists() for p in files.all())
    record = json.loads(files.record.read_text())
    assert record["num_latent_frames"] == 6 and record["num_video_frames"] == 9 + 12
    assert record["segments"] == record["settings"]["segments"] == [
        {"prompt": PROMPT, "start_block": 0, "start_frame": 0, "cut": False},
        {"prompt": NEW, "start_block": 1, "start_frame": 3, "cut": False}]
    assert record["seed"] == session.seed and record["settings"]["video_seed"] == session.seed
    log = json.loads(files.context_log.read_text())
    assert [b["scene"] for b in log["blocks"]] == [0, 1] and log["method"] == "latentmem"
    # the mp4 holds the streamed frames: the demo's noise-like frames lose much to H.264 and 4:2:0 chroma
    # (mean error 12.5 of 255 levels), so each saved frame is checked to be nearest its own streamed frame
    video = torch.from_numpy(read_video(files.video)).float().flatten(1)
    streamed = torch.from_numpy(to_uint8_frames(torch.cat(session.chunks))).float().flatten(1)
    assert video.shape == streamed.shape == (21, 64 * 64 * 3)
    assert torch.equal(torch.cdist(video, streamed).argmin(dim=1), torch.arange(21))

"""The live app's server with a real WebSocket client on localhost (live/server.py, live/save.py)."""
import json
import time
import urllib.request

import pytest
import torch
from websockets.sync.client import connect

from live.server import BUSY_MESSAGE, LiveApp, context_view, first_video_frame
from live.session import LiveSession
from tests.conftest import GeneratorGate, command_queued, demo_live_parts, serve_live_app, text_key
from utils.video_io import read_video

PROMPT, NEW = "A red fox trotting through fresh snow.", "A paper boat drifting down a gutter."
CALLS_PER_BLOCK = 5  # 4 denoising steps + the recache pass
SWITCH_CALLS = 1  # the window's recache under the new prompt at the switch (kv_recache, one call; pipeline/rollout.py)


def receive(ws, kinds: str | tuple[str, ...], timeout: float = 60) -> dict:
    """The next message of one of `kinds` (earlier messages of other types are skipped)."""
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] == "error":
            raise AssertionError(message["message"])
        if message["type"] in ((kinds,) if isinstance(kinds, str) else kinds):
            return message


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    out = tmp_path_factory.mktemp("live")
    # `global`: the default `scoped` bank holds no entry of the typed prompt's segment yet in 8 blocks, and
    # the context view must show retrieved frames
    cfg, parts = demo_live_parts(["num_output_frames=24", f"prompts=[{PROMPT!r}]", f"output_folder={out}",
                                  "model_kwargs.memory_switch_policy=global"])
    app = LiveApp(new_session=lambda text: LiveSession(parts, cfg, text), cfg=cfg, prompt=PROMPT, backbone="demo",
                  label="RANDOM-WEIGHT DEMO: test")
    address, stop = serve_live_app(app)
    yield cfg, parts, address
    stop()


def test_first_video_frame_of_a_latent_frame():
    assert [first_video_frame(f) for f in range(4)] == [0, 1, 5, 9]


def test_context_view_names_sink_window_and_retrieved_frames():
    entry = {"keys": [[0, 0, 16], [4, 0, 16], [None, 2, 16], [16, 7, 8]], "retrieval": {"selected_frames": [[4]]}}
    assert context_view(entry, sink_size=1) == [
        {"frame": 0, "position": 0, "tokens": 16, "kind": "sink", "video_frame": 0},
        {"frame": 4, "position": 0, "tokens": 16, "kind": "retrieved", "video_frame": 13},
        {"frame": 16, "position": 7, "tokens": 8, "kind": "window", "video_frame": 61},
    ]


@pytest.mark.slow
def test_stream_switch_prompt_save_and_one_visitor_at_a_time(live, monkeypatch):
    cfg, parts, address = live
    prompt_queued = command_queued(monkeypatch, "prompt")
    page = urllib.request.urlopen(f"http://{address}/", timeout=30).read().decode()
    assert "/static/live.js" in page and 'id="prompt"' in page
    gate = GeneratorGate(parts.generator)
    try:
        with connect(f"ws://{address}/ws", max_size=None) as ws:
            hello = receive(ws, "hello")
            assert (hello["prompt"], hello["method"], hello["label"], hello["num_frames"]) == (PROMPT, "latentmem", "RANDOM-WEIGHT DEMO: test", 24)
            with connect(f"ws://{address}/ws") as second:
                busy = json.loads(second.recv(timeout=30))
                assert busy == {"type": "busy", "message": BUSY_MESSAGE}
            gate.hold_after(CALLS_PER_BLOCK)  # the first block runs, the next one waits while the prompt is on its way
            ws.send(json.dumps({"type": "start", "prompt": PROMPT}))
            assert receive(ws, "started")["num_blocks"] == 8
            blocks = [receive(ws, "block")]
            ws.send(json.dumps({"type": "prompt", "prompt": NEW}))
            assert prompt_queued.wait(timeout=30)  # in the worker's queue: it is handled when the held block ends
            gate.open.set()
            queued = []
            while (message := receive(ws, ("block", "prompt", "done")))["type"] != "done":
                (blocks if message["type"] == "block" else queued).append(message)
            assert [q["prompt"] for q in queued] == [NEW]
            switch = queued[0]["at_block"]
            ws.send(json.dumps({"type": "save"}))
            saved = receive(ws, "saved")
            ws.send(json.dumps({"type": "prompt", "prompt": NEW, "cut": "yes"}))
            with pytest.raises(AssertionError, match="cut must be true or false, not 'yes'"):
                receive(ws, "prompt")
    finally:
        gate.remove()
    # the typed prompt reached the generator: every call of the blocks from `switch` on used its K/V
    assert switch == 2  # the held block 1 ends before the worker takes the next command
    assert [(b["index"], b["scene"], b["boundary"], b["prompt"]) for b in blocks] == [
        (i, int(i >= switch), i == switch, NEW if i >= switch else PROMPT) for i in range(8)]
    assert [b["switch"] is not None for b in blocks] == [i == switch for i in range(8)]
    assert (blocks[switch]["switch"]["segment"], blocks[switch]["switch"]["previous_segment"]) == (1, 0)
    old, new = text_key(parts, PROMPT), text_key(parts, NEW)
    assert len(gate.texts) == 8 * CALLS_PER_BLOCK + SWITCH_CALLS
    assert all(torch.equal(t, old if i < switch * CALLS_PER_BLOCK else new) for i, t in enumerate(gate.texts))
    # frames arrived as JPEGs: 9 for the first block, 12 for each later one; the speed is reported
    assert [len(b["frames"]) for b in blocks] == [9] + [12] * 7
    assert all(b["speed"]["denoise_fps"] > b["speed"]["total_fps"] > 0 for b in blocks)
    assert any(k["kind"] == "retrieved" for b in blocks for k in b["context"])  # latentmem (global) retrieves from block 6
    # the saved files, in inference's output format
    folder, names = cfg.output_folder, saved["files"]
    stem = names[0][: -len(".mp4")]
    assert stem.startswith("live-") and names == [f"{stem}{s}" for s in (".mp4", ".latents.pt", ".context.json", ".context.png", ".json")]
    record = json.loads(open(f"{folder}/{stem}.json").read())
    assert record["num_video_frames"] == 1 + 4 * 23 == read_video(f"{folder}/{stem}.mp4").shape[0]
    assert record["segments"] == [{"prompt": PROMPT, "start_block": 0, "start_frame": 0, "cut": False},
                                  {"prompt": NEW, "start_block": switch, "start_frame": 3 * switch, "cut": False}]
    assert record["live"] is True and len(record["ms_per_block"]) == len(record["decode_ms_per_block"]) == 8
    log = json.loads(open(f"{folder}/{stem}.context.json").read())
    assert [b["scene"] for b in log["blocks"]] == [int(i >= switch) for i in range(8)]
    assert log["segments"] == [PROMPT, NEW] and [e["block"] for e in log["switches"]] == [switch]
    assert torch.load(f"{folder}/{stem}.latents.pt").shape == (24, 16, 8, 8)
    # the visitor left: the next one gets the generator
    deadline = time.monotonic() + 30
    while True:
        with connect(f"ws://{address}/ws") as ws:
            if json.loads(ws.recv(timeout=30))["type"] == "hello":
                break
        assert time.monotonic() < deadline, "the generator stayed busy after the visitor left"
        time.sleep(0.1)

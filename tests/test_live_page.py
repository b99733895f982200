"""The live app's page (live/static/) in headless Chromium: frames arrive and a typed prompt reaches the generator.

Needs Debian's chromium (`apt-get install -y chromium`, which .ci/run does when it is missing); driven through
playwright's Python API with that executable (no browser download).
"""
import re
import shutil
import tempfile

import pytest
import torch

from live.server import LiveApp
from live.session import LiveSession
from tests.conftest import GeneratorGate, command_queued, demo_live_parts, serve_live_app, text_key

PROMPT, NEW = "A red fox trotting through fresh snow.", "A lighthouse on a cliff in a storm."
CALLS_PER_BLOCK = 5  # 4 denoising steps + the recache pass
SWITCH_CALLS = 1  # the window's recache under the new prompt at the switch (kv_recache, one call; pipeline/rollout.py)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed; run .ci/run's install step: "
                    "apt-get update && apt-get install -y chromium")
    return path


@pytest.mark.slow
def test_page_shows_frames_and_a_typed_prompt_reaches_the_generator(tmp_path, monkeypatch):
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    cfg, parts = demo_live_parts(["num_output_frames=24", f"prompts=[{PROMPT!r}]", f"output_folder={tmp_path}"])
    app = LiveApp(new_session=lambda text: LiveSession(parts, cfg, text), cfg=cfg, prompt=PROMPT, backbone="demo",
                  label="RANDOM-WEIGHT DEMO: test")
    address, stop = serve_live_app(app)
    prompt_queued = command_queued(monkeypatch, "prompt")
    gate = GeneratorGate(parts.generator)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            # a fresh profile (playwright passes it as --user-data-dir)
            browser = pw.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                            args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://{address}/")
            expect(page.locator("#connection")).to_have_text("connected", timeout=30_000)
            expect(page.locator("#label")).to_have_text("RANDOM-WEIGHT DEMO: test")
            expect(page.locator("#prompt")).to_have_value(PROMPT)
            gate.hold_after(CALLS_PER_BLOCK)  # the first block runs, the next one waits while the visitor types
            page.click("#start")
            expect(page.locator("#frames-received")).not_to_have_text("0", timeout=60_000)
            # the player shows the first frame on its next tick (1/fps after it arrived), so wait for it
            expect(page.locator("#video")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,."),
                                                           timeout=30_000)
            page.fill("#prompt", NEW)
            page.check("#cut")  # a hard cut: the switch event and the saved record say so
            page.click("#send-prompt")
            assert prompt_queued.wait(timeout=30)  # in the worker's queue: it is handled when the held block ends
            gate.open.set()
            expect(page.locator("#current-prompt")).to_have_text(NEW, timeout=60_000)
            expect(page.locator("#blocks-done")).to_have_text("8", timeout=60_000)
            received = int(page.locator("#frames-received").inner_text())
            segments = page.locator("#segments li").all_inner_texts()
            thumbnails = page.locator("#context .thumb img").count()
            browser.close()
    finally:
        gate.remove()
        stop()
    assert received == 1 + 4 * 23  # every frame of the 24-latent-frame video reached the page
    assert len(segments) == 2 and segments[0] == f"from block 0: {PROMPT}"
    head, detail = segments[1].split("\n", 1)
    assert head.endswith(f": {NEW}") and detail.startswith("switch: cut true, recached_frames ")  # the switch event
    switch = int(head.split()[2].rstrip(":"))
    assert thumbnails >= 3  # the last block's context: the sink, window and retrieved frames
    old, new = text_key(parts, PROMPT), text_key(parts, NEW)
    assert len(gate.texts) == 8 * CALLS_PER_BLOCK + SWITCH_CALLS and switch == 2  # after the held block 1
    assert all(torch.equal(t, old if i < switch * CALLS_PER_BLOCK else new) for i, t in enumerate(gate.texts))

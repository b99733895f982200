"""The live app's web server: FastAPI serves one static page (live/static/) and a WebSocket `/ws`.

One session at a time: the first visitor's WebSocket holds the generator until it closes; a second
visitor gets a `busy` message and a closed socket. Generation runs in a worker thread that owns the
LiveSession (every session call happens there, between blocks), fed commands from the socket:

    client -> server   {"type": "start", "prompt": str}   (re)start the video from its first block
                       {"type": "prompt", "prompt": str, "cut": bool}  condition the blocks from the next one on
                                                                   (cut: a hard cut into a new scene; default false)
                       {"type": "pause"} | {"type": "resume"} | {"type": "save"}
    server -> client   hello (settings, label), block (JPEG frames, context, speed), prompt (queued),
                       saved (files), done, error, busy
"""
from __future__ import annotations

import asyncio
import base64
import io
import queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from inference_job.config import InferenceConfig
from live.save import save_session
from live.session import BlockUpdate, LiveSession
from utils.video_io import FPS, to_uint8_frames

STATIC = Path(__file__).parent / "static"
BUSY_MESSAGE = ("Another visitor is using the live generator. It serves one session at a time (one video's caches "
                "on the device); this page connects again when you reload it after their session ends.")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class LiveApp:
    """What the server needs: how to start a session, the config (output folder, writers), the page's texts."""

    new_session: Callable[[str], LiveSession]  # prompt -> a fresh session
    cfg: InferenceConfig
    prompt: str  # the prompt box's first text
    backbone: str
    label: str | None  # the random-weight banner, None on real weights


def jpeg_frames(update: BlockUpdate) -> list[str]:
    """The block's frames as base64 JPEGs."""
    out = []
    for frame in to_uint8_frames(update.video):  # [H, W, 3] uint8
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def first_video_frame(latent_frame: int) -> int:
    """Index of the first video frame decoded from a latent frame (the first latent frame gives one frame,
    every later one four)."""
    return 0 if latent_frame == 0 else 4 * latent_frame - 3


def context_view(entry: dict, sink_size: int) -> list[dict]:
    """The attended past frames of a context-log entry, each with its role: retrieved from the memory, a sink
    frame, or kept in the window; `tokens` counts the frame's attended tokens (Deep Forcing keeps parts)."""
    retrieval = entry.get("retrieval") or {}
    retrieved = set(retrieval.get("selected_frames", [[]])[0])
    view = []
    for frame, position, tokens in entry["keys"]:
        if frame is None:
            continue
        kind = "retrieved" if frame in retrieved else "sink" if frame < sink_size else "window"
        view.append({"frame": frame, "position": position, "tokens": tokens, "kind": kind,
                     "video_frame": first_video_frame(frame)})
    return view


def block_message(update: BlockUpdate, session: LiveSession) -> dict:
    frames = update.video.shape[0]
    totals_ms = sum(session.ms_per_block), sum(session.decode_ms)
    video_frames = sum(chunk.shape[0] for chunk in session.chunks)
    return {
        "type": "block", "index": update.block.index, "num_blocks": len(session.layout), "scene": update.block.scene,
        "boundary": update.block.boundary, "prompt": update.prompt, "first_frame": update.block.frames[0],
        "first_video_frame": video_frames - frames, "frames": jpeg_frames(update),
        "context": context_view(update.context, session.cfg.model_kwargs.sink_size),
        "num_banked": update.context.get("num_banked"), "switch": update.context.get("switch"),
        "speed": {"denoise_ms": update.denoise_ms, "decode_ms": update.decode_ms,
                  "denoise_fps": frames * 1000 / update.denoise_ms,
                  "total_fps": frames * 1000 / (update.denoise_ms + update.decode_ms),
                  "mean_denoise_fps": video_frames * 1000 / totals_ms[0],
                  "mean_total_fps": video_frames * 1000 / sum(totals_ms)},
    }


class SessionWorker(threading.Thread):
    """Owns one visitor's LiveSession: runs its commands in order and steps the video between them."""

    def __init__(self, app: LiveApp, send: Callable[[dict], None]):
        super().__init__(name="live-session", daemon=True)
        self.app, self.send = app, send
        self.commands: queue.Queue[dict] = queue.Queue()
        self.session: LiveSession | None = None
        self.paused = False

    def stop(self) -> None:
        self.commands.put({"type": "stop"})

    def running(self) -> bool:
        return self.session is not None and not self.paused and not self.session.done

    def run(self) -> None:
        try:
            while True:
                try:
                    command = self.commands.get(block=not self.running())
                except queue.Empty:
                    command = None
                if command is not None and command["type"] == "stop":
                    return
                try:
                    self.step() if command is None else self.handle(command)
                except Exception as err:  # the visitor sees the failure; the worker stays for save and restart
                    traceback.print_exc()
                    self.paused = True
                    self.send({"type": "error", "message": f"{type(err).__name__}: {err}"})
        finally:
            if self.session is not None:
                self.session.close()

    def step(self) -> None:
        session = self.session
        self.send(block_message(session.step(), session))
        if session.done:
            self.send({"type": "done", "blocks": session.blocks_done})

    def handle(self, command: dict) -> None:
        kind = command["type"]
        try:
            if kind == "start":
                if self.session is not None:
                    self.session.close()
                self.session, self.paused = None, False
                self.session = self.app.new_session(str(command.get("prompt") or self.app.prompt))
                self.send({"type": "started", "prompt": self.session.prompt, "num_blocks": len(self.session.layout)})
            elif self.session is None:
                raise ValueError("press Start first: no video is running")
            elif kind == "prompt":
                cut = command.get("cut", False)
                if not isinstance(cut, bool):
                    raise ValueError(f"the prompt command's cut must be true or false, not {cut!r}")
                self.session.set_prompt(str(command.get("prompt", "")), cut)
                self.send({"type": "prompt", "prompt": self.session.pending, "cut": self.session.pending_cut,
                           "at_block": self.session.blocks_done})
            elif kind in ("pause", "resume"):
                self.paused = kind == "pause"
                self.send({"type": kind})
            elif kind == "save":
                files = save_session(self.session, self.app.cfg)
                self.send({"type": "saved", "folder": str(files.folder.resolve()), "files": [p.name for p in files.all()]})
            else:
                raise ValueError(f"unknown command '{kind}'")
        except ValueError as err:
            self.send({"type": "error", "message": str(err)})


def hello(app: LiveApp) -> dict:
    cfg, mk = app.cfg, app.cfg.model_kwargs
    return {"type": "hello", "backbone": app.backbone, "method": cfg.method, "label": app.label, "prompt": app.prompt,
            "fps": FPS, "frames_per_block": cfg.num_frame_per_block, "num_frames": cfg.num_output_frames,
            "window": mk.local_attn_size, "sink_size": mk.sink_size, "output_folder": cfg.output_folder}


def create_app(app: LiveApp) -> FastAPI:
    """The FastAPI application: `/` the page, `/static/*` its script and style, `/ws` the session socket."""
    web = FastAPI(title="longlive-rag live", docs_url=None, redoc_url=None, openapi_url=None)
    slot = threading.Lock()  # held by the visitor whose socket is open
    web.mount("/static", StaticFiles(directory=STATIC), name="static")

    @web.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @web.websocket("/ws")
    async def session_socket(ws: WebSocket) -> None:
        await ws.accept()
        if not slot.acquire(blocking=False):
            await ws.send_json({"type": "busy", "message": BUSY_MESSAGE})
            await ws.close(code=1013)  # try again later
            return
        try:
            await serve_session(ws, app)
        finally:
            slot.release()

    return web


async def serve_session(ws: WebSocket, app: LiveApp) -> None:
    """Relay the socket's commands to a worker thread and its messages back until the visitor leaves."""
    loop, outbox = asyncio.get_running_loop(), asyncio.Queue()
    worker = SessionWorker(app, lambda message: loop.call_soon_threadsafe(outbox.put_nowait, message))
    await ws.send_json(hello(app))
    worker.start()

    async def relay_out() -> None:
        try:
            while True:
                await ws.send_json(await outbox.get())
        except (WebSocketDisconnect, RuntimeError):  # the visitor left while a message was on its way
            return

    sender = asyncio.create_task(relay_out())
    try:
        while True:
            command = await ws.receive_json()
            worker.commands.put(command if isinstance(command, dict) and "type" in command else {"type": repr(command)})
    except WebSocketDisconnect:
        pass
    finally:
        worker.stop()
        await asyncio.to_thread(worker.join)
        sender.cancel()

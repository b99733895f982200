from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, map_location="cpu", weights_only=True)


def fixture_generator():
    """The fixtures' tiny generator (demo preset weights of gen_generator.pt), in eval mode."""
    from wan.checkpoint import load_backbone_checkpoint
    from wan.model import CausalWanModel
    from wan.model_config import model_preset

    model = CausalWanModel(model_preset("demo")).eval()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    return model


def seeded_noise(seed: int):
    """A NoiseSource drawing on the CPU from its own generator."""
    from pipeline.rollout import gaussian_noise

    return gaussian_noise(torch.Generator().manual_seed(seed))


def no_clean_pass(context, x0, scene):
    """PolicySetup.clean_pass of tests without a prompt switch."""
    raise AssertionError("this test runs no clean pass")


class GeneratorGate:
    """A forward pre-hook on the generator that records the text K of layer 0 of every call (the prompt the
    call was conditioned on) and holds the calls while the gate is closed (tests decide where a block waits)."""

    def __init__(self, generator):
        import threading

        self.texts: list[torch.Tensor] = []
        self.open = threading.Event()
        self.open.set()
        self.free_calls = 0  # calls that pass a closed gate (see hold_after)
        self.handle = generator.register_forward_pre_hook(self)

    def hold_after(self, calls: int) -> None:
        """Let the next `calls` calls pass, then hold every call until `open` is set."""
        self.free_calls = len(self.texts) + calls
        self.open.clear()

    def __call__(self, module, args):
        if len(self.texts) >= self.free_calls and not self.open.wait(timeout=60):
            raise AssertionError("a test held the generator's gate closed for 60 s")
        self.texts.append(args[2].kv[0][0])

    def remove(self) -> None:
        self.open.set()
        self.handle.remove()


def command_queued(monkeypatch, kind: str):
    """An event set once a live session worker has a visitor's `kind` command in its queue (the server
    has taken it off the socket), for tests that hold the generator until a command has arrived."""
    import threading

    from live.server import SessionWorker

    queued, init = threading.Event(), SessionWorker.__init__

    def watched_init(worker, *args, **kwargs):
        init(worker, *args, **kwargs)
        put = worker.commands.put

        def put_and_note(command, *a, **k):
            put(command, *a, **k)
            if command.get("type") == kind:
                queued.set()

        worker.commands.put = put_and_note

    monkeypatch.setattr(SessionWorker, "__init__", watched_init)
    return queued


def demo_live_parts(overrides: list[str]):
    """(config, live components) of the demo latentmem config on the CPU in float32."""
    from inference_job.config import load_inference_config
    from pipeline.build import build_live_components

    cfg = load_inference_config("configs/demo_latentmem.yaml", overrides)
    return cfg, build_live_components(cfg, torch.device("cpu"), torch.float32)


def text_key(parts, prompt: str) -> torch.Tensor:
    """Layer 0's cross-attention K of `prompt`, computed apart from any session."""
    with torch.no_grad():
        return parts.generator.encode_text(parts.text_encoder.encode([prompt])).kv[0][0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_live_app(app):
    """Run the live app's server on a free localhost port in a thread -> (base URL, stop())."""
    import threading
    import time

    import uvicorn

    from live.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live app's server did not start")
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=30)

    return f"127.0.0.1:{port}", stop

"""Watch and steer a video while it is generated: a local web page (live/) over one backbone x method config.

    python app.py --config configs/demo_latentmem.yaml [key=value ...] [--host 127.0.0.1] [--port 7860]
    bash app.sh demo latentmem [key=value ...]          # the same; PORT=, HOST=, GPU= in the environment

Open the printed address. The page streams the video block by block as it is generated (each block decoded
by the VAE as soon as it is finished), takes a new prompt at any time (it conditions the blocks from the next
one on), shows which past frames each block attends (sink, window, retrieved from the memory) with
thumbnails, the generation speed with and without decoding, and saves the video and its logs to
`output_folder` in inference.py's format (`live-<date>-<time>.mp4/.json/.context.json/.context.png`).

The first prompt of the config (`prompts` or `data_path`) fills the prompt box; the video has
`num_output_frames` latent frames. One visitor at a time: a second one is told the generator is busy.
The server listens on 127.0.0.1 (this machine only) unless --host says otherwise. Needs the `app` extra:
    pip install -c constraints.txt -e ".[app]"
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from functools import partial
from typing import Sequence

import torch

from inference_job.config import InferenceConfig, load_inference_config
from pipeline.build import build_live_components, prepare_run, random_weight_label
from pipeline.generation_config import read_prompts
from utils.config import ConfigError
from utils.distributed import DistInfo
from utils.entry import run_loaded

DEFAULT_PORT = 7860


class AppSetupError(ConfigError):
    """The app cannot start: its web libraries are missing or its port is taken."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo_latentmem.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT),
                        help=f"port (default: $PORT or {DEFAULT_PORT})")
    parser.add_argument("--check-config", action="store_true", help="only load and validate the config")
    return parser.parse_args(argv)


def require_web_libraries() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise AppSetupError(f"the live app needs the 'app' extra ({err.name} is missing); install it with "
                            "pip install -c constraints.txt -e \".[app]\"") from None


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, opened before anything loads: a taken port fails in a second, and the
    printed address accepts connections from then on (they wait until the server runs)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AppSetupError(f"cannot listen on {host}:{port} ({err.strerror}); another program uses the port: "
                            f"choose another with PORT=... (or --port)") from None
    sock.listen(16)
    return sock


def serve(cfg: InferenceConfig, info: DistInfo, host: str, port: int) -> None:
    require_web_libraries()
    sock = listen_socket(host, port)
    import uvicorn

    from live.server import LiveApp, create_app
    from live.session import LiveSession

    prompt = read_prompts(cfg)[0]
    setup = prepare_run(cfg, info, keep_text_encoder=True)
    parts = build_live_components(cfg, setup.device, setup.dtype)
    app = LiveApp(new_session=lambda text: LiveSession(parts, cfg, text), cfg=cfg, prompt=prompt,
                  backbone=cfg.model_preset, label=random_weight_label(setup.random_components))
    print(f"live app on http://{host}:{port} ({cfg.model_preset}, {cfg.method}, {setup.device} "
          f"{setup.dtype}); Ctrl-C stops it", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        print("live app stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = partial(serve, host=args.host, port=args.port)
    return run_loaded(args.config, args.overrides, load_inference_config, run, check_only=args.check_config)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())

"""benchmarks/bench_methods.py's full-size byte count (on `meta`, seconds): it runs, and latentmem's extra
traffic per steady-state block is what its design moves: 6 retrieved frames gathered plus 3 banked."""
import json
import subprocess
import sys
from pathlib import Path

from wan.model_config import model_preset

ROOT = Path(__file__).resolve().parents[1]


def test_full_size_extra_bytes_per_block_match_the_frames_each_method_moves():
    run = subprocess.run([sys.executable, "benchmarks/bench_methods.py", "--skip-timing"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    cfg = model_preset("wan2.1-t2v-1.3b")
    frame = cfg.num_layers * 2 * (30 * 52) * cfg.num_heads * cfg.head_dim * 2  # K and V of one frame, bf16
    assert frame == 287_539_200
    latentmem = figures["latentmem_extra_bytes_per_block_full_size"]
    assert abs(latentmem - 9 * frame) < 2**20  # K = 6 gathered + 3 evicted frames banked; bookkeeping < 1 MB
    assert figures["native_extra_bytes_per_block_full_size"] == 0
    assert abs(figures["infrope_extra_bytes_per_block_full_size"]) < 2**20
    assert figures["deepforcing_extra_bytes_per_block_full_size"] > 100 * frame  # its fp32 attention scores

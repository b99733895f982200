import dataclasses
import json

import pytest
import torch

from toydatasets.toy_world import WorldConfig
from toyworld.experiment import SCALARS, ExperimentConfig, run
from toyworld.train import ToyTrainConfig, build_generator
from utils.config import ConfigError

WORLD = WorldConfig(height=64, width=32, num_regions=6, num_objects=8)  # loops come back after 16 frames


@pytest.mark.slow
def test_experiment_writes_table_curves_and_figures(tmp_path):
    model = build_generator(ToyTrainConfig(model_preset="demo"))
    torch.save({"model": model.state_dict(), "model_preset": "demo", "world": dataclasses.asdict(WORLD), "train": {}},
               tmp_path / "generator.pt")
    cfg = ExperimentConfig(generator=str(tmp_path / "generator.pt"), methods=["native", "latentmem/oracle"], seeds=[0, 1],
                           trajectories_per_kind=1, num_frames=36, out_dir=str(tmp_path / "out"))
    cfg.validate()
    results = run(cfg)
    table = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert table[0].split(" | ")[1:] == list(SCALARS[:-1]) + [SCALARS[-1] + " |"]
    assert [row.split(" | ")[0] for row in table[2:]] == ["| native", "| latentmem/oracle"]
    for method in cfg.methods:
        assert [r["seed"] for r in results["per_seed"][method]] == [0, 1]
        assert len(results["error_curves"][method]["loop"]) == 36
        assert results["error_curves"][method]["loop"][:6] == [0.0] * 6  # the ground-truth opening
    oracle = results["per_seed"]["latentmem/oracle"][0]
    assert oracle["hit_rate"] == oracle["hit_rate_true"] > 0.5  # the oracle reads the camera, not the frames
    assert all(r["hit_rate"] != r["hit_rate"] for r in results["per_seed"]["native"])  # nan: native retrieves nothing
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["per_seed"] == json.loads(json.dumps(results["per_seed"]))
    for name in ("error_over_time.png", "filmstrip.png"):
        size = (tmp_path / "out" / name).stat().st_size
        assert 5_000 < size < 200_000


def test_experiment_config_rejects_unknown_methods_and_bad_openings():
    with pytest.raises(ConfigError, match="method 'latentmem'"):
        ExperimentConfig(methods=["latentmem"]).validate()  # latentmem needs its descriptor: latentmem/<descriptor>
    with pytest.raises(ConfigError, match="opening_frames 4"):
        ExperimentConfig(opening_frames=4).validate()

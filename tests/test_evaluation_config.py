"""configs/evaluate.yaml and the EvaluateConfig checks."""
from pathlib import Path

import pytest

from evaluation.config import EvaluateConfig, load_evaluate_config
from utils.config import ConfigError

YAML = Path(__file__).resolve().parents[1] / "configs" / "evaluate.yaml"


def test_the_yaml_holds_the_dataclass_defaults():
    cfg = load_evaluate_config(YAML, ["run_folders=[a,b]"])
    assert cfg == EvaluateConfig(run_folders=["a", "b"])
    assert cfg.vbench.commit == "45e79ec" and cfg.vbench.dev_flag and cfg.drift.clip_seconds == 2.0


@pytest.mark.parametrize("override, message", [
    ("vbench.dimensions=[subject_consistency,color]", "vbench.dimensions"),
    ("drift.gap_seconds=[0.0]", "drift.gap_seconds"),
    ("drift.vde_weighting=exp", "drift.vde_weighting 'exp'"),
    ("drift.vde_chunks=1", "drift.vde_chunks"),
    ("run_folders=[a,a]", "lists a folder twice"),
])
def test_impossible_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_evaluate_config(YAML, ["run_folders=[a]", override])


@pytest.mark.parametrize("mode", ["auto", "skip", "required"])
def test_every_vbench_mode_is_accepted_as_a_command_line_override(mode):
    # YAML 1.1 reads `off` / `no` as booleans: a mode spelt that way could never be given as an override
    assert load_evaluate_config(YAML, ["run_folders=[a]", f"vbench.mode={mode}"]).vbench.mode == mode

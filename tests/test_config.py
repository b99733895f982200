"""utils.config: YAML -> dataclass, overrides, unknown keys, and `base` composition."""
from dataclasses import dataclass, field

import pytest

from utils.config import ConfigError, load_config


@dataclass
class Inner:
    size: int = 1
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Schema:
    method: str = "native"
    inner: Inner = field(default_factory=Inner)
    out: str = "x"


def test_base_file_is_loaded_first_and_the_file_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("method: latentmem\nout: base\ninner:\n  size: 4\n  names: [b, c]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nout: child\ninner:\n  names: [d]\n")
    cfg = load_config(Schema, tmp_path / "sub" / "child.yaml", ["inner.size=5"])
    assert cfg == Schema(method="latentmem", inner=Inner(size=5, names=["d"]), out="child")


def test_bases_chain_and_cycles_and_missing_bases_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("out: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmethod: infrope\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    assert load_config(Schema, tmp_path / "c.yaml") == Schema(method="infrope", out="a")
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_config(Schema, tmp_path / "x.yaml")
    (tmp_path / "m.yaml").write_text("base: absent.yaml\n")
    with pytest.raises(ConfigError, match="base file 'absent.yaml' not found"):
        load_config(Schema, tmp_path / "m.yaml")


def test_unknown_key_in_a_base_file_is_rejected(tmp_path):
    (tmp_path / "base.yaml").write_text("methd: latentmem\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\n")
    with pytest.raises(ConfigError, match="methd"):
        load_config(Schema, tmp_path / "child.yaml")

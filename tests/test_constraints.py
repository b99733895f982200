"""constraints.txt pins the tested versions of the whole dependency closure (issue 19, item 8)."""
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from utils.constraints import dependency_closure, render

REPO = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = spec.version
    return out


def test_constraints_file_is_the_installed_closure():
    committed = pins((REPO / "constraints.txt").read_text())
    closure = dependency_closure()
    assert committed == closure, "regenerate with `python -m utils.constraints` (README: Reproducible installs)"
    assert committed["torch"] == "2.13.0"  # public version: the CPU and CUDA wheels of one release
    for name in ("diffusers", "transformers", "peft", "huggingface-hub", "pytest", "numpy", "tokenizers"):
        assert name in committed


def test_render_sorts_and_pins_exactly():
    text = render({"b-pkg": "1.0", "a-pkg": "2.0.post1"})
    assert text.splitlines()[-2:] == ["a-pkg==2.0.post1", "b-pkg==1.0"]
    assert pins(text) == {"a-pkg": "2.0.post1", "b-pkg": "1.0"}


def test_ci_and_readme_install_through_the_constraints():
    ci = (REPO / ".ci/run").read_text()
    assert 'pip install -c constraints.txt -e ".[test,app]"' in ci and "torch==2.13.0" in ci
    readme = (REPO / "README.md").read_text()
    assert readme.count("-c constraints.txt") >= 2

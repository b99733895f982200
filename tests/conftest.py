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
    """A NoiseSource drawing from its own generator."""
    gen = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=gen)

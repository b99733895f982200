"""utils/dtypes.py and the seeded initialisation of utils/seeding.py."""
import pytest
import torch

from utils.dtypes import compute_dtype, dtype_name, resolve_dtype, torch_dtype
from utils.seeding import seeded


def test_names_map_to_torch_dtypes_and_back():
    for name in ("float32", "bfloat16", "float16"):
        assert dtype_name(torch_dtype(name)) == name
    with pytest.raises(ValueError, match="dtype 'float64' is not one of"):
        torch_dtype("float64")


def test_auto_is_the_default_and_bfloat16_on_cuda_float32_on_cpu():
    assert resolve_dtype("auto", torch.float16) is torch.float16
    assert resolve_dtype("bfloat16", torch.float16) is torch.bfloat16
    assert compute_dtype("auto", torch.device("cpu")) is torch.float32



@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_only_on_a_gpu_with_native_bf16(native, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation) or native)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert compute_dtype("auto", torch.device("cuda", 0)) is (torch.bfloat16 if native else torch.float32)
    assert asked == [False]  # emulated bf16 does not count
    err = capsys.readouterr().err
    assert ("Tesla V100 has no native bfloat16; dtype auto runs in float32" in err) is not native
    assert compute_dtype("bfloat16", torch.device("cuda", 0)) is torch.bfloat16  # an explicit choice is kept


def test_seeded_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(0):
        a = torch.randn(4)
    with seeded(0):
        b = torch.randn(4)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_next)

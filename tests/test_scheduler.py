"""Flow-matching schedule: tables, warped steps, x0 conversion and re-noising against the reference."""
import pytest
import torch

from conftest import load_fixture
from pipeline.scheduler import FlowMatchSchedule

NATIVE_TRACES = ["gen_native_sink1.pt", "gen_native_sink3.pt", "gen_native_lora.pt"]


@pytest.fixture(scope="module")
def trace():
    return load_fixture("gen_native_sink1.pt")


# The reference implementation computes the same tables; equal on the fixture's machine, compared within
# one float32 ulp (relative 2^-23) so that another CPU's instruction selection cannot fail the tests.
ULP = dict(rtol=2.0**-23, atol=0.0)


def test_tables_match_reference(trace):
    schedule = FlowMatchSchedule(shift=5.0, num_train_timesteps=1000)
    assert schedule.sigmas.dtype == schedule.timesteps.dtype == torch.float32
    assert torch.allclose(schedule.sigmas, trace["scheduler_sigmas"], **ULP)
    assert torch.allclose(schedule.timesteps, trace["scheduler_timesteps"], **ULP)


def test_warped_steps_match_reference(trace):
    schedule = FlowMatchSchedule(5.0)
    steps = schedule.step_timesteps([1000, 750, 500, 250], warp=True)
    assert torch.allclose(steps, trace["denoising_timesteps"], **ULP)
    assert steps.tolist() == pytest.approx([1000.0, 937.5, 833.3333129882812, 625.0], rel=2.0**-23)
    assert torch.allclose(schedule.sigma(steps), trace["denoising_sigmas"], **ULP)
    # every recorded call ran at the warped timestep of its step
    for i, t in enumerate(steps):
        assert torch.allclose(trace["step_timestep"][:, i], t.expand_as(trace["step_timestep"][:, i]), **ULP)


def test_unwarped_steps_are_the_raw_list():
    steps = FlowMatchSchedule(5.0).step_timesteps([1000, 750, 500, 250], warp=False)
    assert steps.tolist() == [1000.0, 750.0, 500.0, 250.0]


def test_recache_sigma_is_the_nearest_table_sigma_to_timestep_zero(trace):
    sigma = FlowMatchSchedule(5.0).sigma(torch.tensor(float(trace["recache_timestep"])))
    assert sigma.item() == pytest.approx(trace["recache_sigma"], rel=2.0**-23)
    assert trace["recache_sigma"] == pytest.approx(0.004980080295354128, rel=2.0**-23)


def test_sigma_picks_nearest_table_entry_elementwise():
    schedule = FlowMatchSchedule(5.0)
    idx = torch.tensor([[0, 250], [600, 999]])
    # nudge each timestep off its table entry by well under half the local table spacing
    t = schedule.timesteps[idx] + torch.tensor([[-0.04, 0.04], [-0.04, -4.0]])
    assert torch.equal(schedule.sigma(t), schedule.sigmas[idx])
    assert schedule.sigma(torch.tensor([937.5, 0.0])).tolist() == [schedule.sigmas[250].item(), schedule.sigmas[999].item()]


def test_flow_to_x0_is_x_minus_sigma_flow_in_float64():
    schedule = FlowMatchSchedule(5.0)
    g = torch.Generator().manual_seed(0)
    x, flow = torch.randn(1, 2, 4, 3, 3, generator=g), torch.randn(1, 2, 4, 3, 3, generator=g)
    timestep = torch.tensor([[833.3333129882812, 625.0]])
    sigma = schedule.sigma(timestep).double()
    expected = (x.double() - sigma[..., None, None, None] * flow.double()).float()
    assert torch.equal(schedule.flow_to_x0(flow, x, timestep), expected)


@pytest.mark.parametrize("name", NATIVE_TRACES)
def test_renoise_reproduces_recorded_step_inputs_bit_for_bit(name):
    trace = load_fixture(name)
    schedule = FlowMatchSchedule(5.0)
    num_blocks, steps = trace["step_x0"].shape[:2]
    for b in range(num_blocks):
        for i in range(steps - 1):
            x = schedule.renoise(trace["step_x0"][b, i], trace["renoise_noise"][b, i], trace["renoise_timestep"][b, i])
            assert torch.equal(x, trace["step_input"][b, i + 1]), f"block {b}, step {i}"

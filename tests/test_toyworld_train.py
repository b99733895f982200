import pytest
import torch

from pipeline.build import build_context_method
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.retrieval import TopKRetrieval
from pipeline.rollout import gaussian_noise, generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from pipeline.scheduler import FlowMatchSchedule
from toydatasets.toy_world import Trajectory, WorldConfig, make_world, views
from toyworld.batches import bank_eligible, sample_sequence
from toyworld.rollouts import rollout_from_opening
from toyworld.train import Phase, ToyTrainConfig, build_generator, generator_identity, generator_loss, run_phase
from utils.config import ConfigError
from wan.rope import Rope3D

WORLD = WorldConfig(height=32, width=32, num_regions=6, num_objects=8)


SMALL_WINDOW = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(local_attn_size=6, memory_size=2, recent_exclude=1))  # short sequences: fast steps


def tiny_config(tmp_path, **kw) -> ToyTrainConfig:
    settings = dict(world=WORLD, rollout=SMALL_WINDOW, model_preset="demo", out_dir=str(tmp_path), num_worlds=8, batch_size=8,
                    max_frames=24, warmup_steps=5, checkpoint_every=3, lr=4e-3)
    cfg = ToyTrainConfig(**{**settings, **kw})
    cfg.validate()
    return cfg


class Generator:
    """The generator phase of toyworld.train on a tiny config."""

    def __init__(self, cfg: ToyTrainConfig):
        self.cfg = cfg
        self.worlds = [make_world(cfg.world, s) for s in range(cfg.num_worlds)]
        self.model = build_generator(cfg)
        self.rope = Rope3D(self.model.cfg.head_dim, self.model.cfg.rope_max_positions)
        self.schedule = FlowMatchSchedule(cfg.rollout.model_kwargs.timestep_shift)
        self.steps = self.schedule.step_timesteps(cfg.rollout.denoising_step_list, True)

    def loss(self, g: torch.Generator) -> torch.Tensor:
        return generator_loss(self.model, self.rope, self.schedule, self.steps, self.worlds, self.cfg, g)

    def phase(self, loss=None) -> Phase:
        return Phase("generator", self.model, loss or self.loss, self.cfg.steps, self.cfg.lr, self.cfg.min_lr,
                     self.cfg.warmup_steps, self.cfg.grad_clip, generator_identity(self.cfg))

    def held_out_loss(self) -> float:
        with torch.no_grad():
            return sum(self.loss(torch.Generator().manual_seed(100 + i)).item() for i in range(4)) / 4


@pytest.fixture(scope="module")
def briefly_trained(tmp_path_factory):
    """A tiny generator before and after 100 steps (the two tests below share the ~15 s of training)."""
    tmp = tmp_path_factory.mktemp("toy_train")
    gen = Generator(tiny_config(tmp, steps=100, checkpoint_every=100))
    before = gen.held_out_loss()
    log = run_phase(gen.phase(), gen.cfg, tmp / "state.pt", seed=0)
    return gen, before, gen.held_out_loss(), log


def test_training_lowers_the_loss(briefly_trained):
    gen, before, after, log = briefly_trained
    assert len(log["losses"]) == 100
    assert after < 0.8 * before, (before, after)


def test_true_frames_in_the_window_are_reproduced_better_than_wrong_ones(briefly_trained):
    """The sanity check of the testbed: the same model, the same camera path, the opening taken from the
    true world or from another one; the next block is closer to the truth when the window holds the truth."""
    gen = briefly_trained[0]
    pos = torch.stack([Trajectory("loop", (2 * i, 2 * i), (0, 1 - 2 * (i % 2))).positions(WORLD, 9) for i in range(16)])
    truth = torch.stack([views(make_world(WORLD, 500 + i), p, WORLD.view) for i, p in enumerate(pos)])
    wrong = torch.stack([views(make_world(WORLD, 600 + i), p, WORLD.view) for i, p in enumerate(pos)])

    def next_block_error(opening):
        frames = torch.cat([opening[:, :6], truth[:, 6:]], dim=1)
        result = rollout_from_opening(gen.model, "native", SMALL_WINDOW, frames, pos, WORLD, 6, seed=0)
        return (result.latents[:, 6:] - truth[:, 6:]).pow(2).mean().item()

    with_truth, with_wrong = next_block_error(truth), next_block_error(wrong)
    assert with_truth < 0.93 * with_wrong, (with_truth, with_wrong)


def test_interrupted_training_resumes_bit_identically(tmp_path):
    straight = Generator(tiny_config(tmp_path / "a", steps=7))
    run_phase(straight.phase(), straight.cfg, tmp_path / "a" / "state.pt", seed=0)

    resumed = Generator(tiny_config(tmp_path / "b", steps=7))
    calls = []

    def crashing(g):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return resumed.loss(g)

    with pytest.raises(KeyboardInterrupt):
        run_phase(resumed.phase(crashing), resumed.cfg, tmp_path / "b" / "state.pt", seed=0)
    fresh = Generator(tiny_config(tmp_path / "b", steps=7))  # a new process: new model, state from the file
    log = run_phase(fresh.phase(), fresh.cfg, tmp_path / "b" / "state.pt", seed=0)
    assert len(log["losses"]) == 7
    for (name, a), b in zip(straight.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), name
    other = Generator(tiny_config(tmp_path / "b", steps=7, lr=5e-4))
    with pytest.raises(ConfigError, match="other settings"):
        run_phase(other.phase(), other.cfg, tmp_path / "b" / "state.pt", seed=0)


def test_sequences_follow_the_block_loop_layouts():
    cfg = RolloutConfig()
    worlds = [make_world(WORLD, 0)]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        seq = sample_sequence(worlds, WORLD, cfg, 2, 48, {"native": 1, "window": 1, "memory_window": 1}, 0.5, g)
        seen.add(seq.layout)
        s = seq.frames.shape[1]
        assert seq.frames.shape == (2, s, 16, 8, 8) and seq.positions.shape == seq.groups.shape == (s,)
        assert s <= cfg.model_kwargs.local_attn_size  # the same budget as a rollout
        assert (seq.groups[-seq.num_target :] == seq.groups.max()).all()  # the target block sees every context frame
        assert (seq.groups[:-seq.num_target] < seq.groups.max()).all()
    assert seen == {"native", "window", "memory_window"}


def test_bank_eligible_matches_the_pipeline_history_bank():
    from conftest import load_fixture
    from wan.model import CausalWanModel
    from wan.model_config import WanModelConfig

    model = CausalWanModel(WanModelConfig.from_dict(load_fixture("gen_latentmem_avgpool.pt")["config"]["model"])).eval()
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="avg_pool"))
    g = torch.Generator().manual_seed(0)
    result = generate(model, cfg, torch.randn(1, 36, 16, 8, 8, generator=g), torch.randn(1, 10, 32, generator=g),
                      gaussian_noise(g), build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy)
    decisions = [block["retrieval"] for block in result.context_log if block["retrieval"]]
    assert decisions
    for entry in decisions:
        eligible = bank_eligible(entry["block_start_frame"], cfg)
        assert len(eligible) == entry["num_eligible"]
        assert set(entry["selected_frames"][0]) <= set(eligible)
    assert len(bank_eligible(12, cfg)) == 0

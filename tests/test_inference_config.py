from pathlib import Path

import pytest

from inference_job.config import InferenceConfig, load_inference_config
from pipeline.generation_config import read_prompts
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from utils.assets import MissingAssetError
from utils.config import ConfigError
from utils.seeding import may_use_random_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BACKBONES = ("causal_forcing", "self_forcing", "longlive")
METHODS = ("native", "latentmem", "infrope", "deepforcing")
DEMO = CONFIGS / "demo_latentmem.yaml"


def test_config_folder_holds_exactly_the_grid_the_demos_corpus_generation_and_evaluation():
    expected = {f"{b}_{m}.yaml" for b in BACKBONES + ("demo",) for m in METHODS}
    expected |= {"generate_latent.yaml", "generate_latent_demo.yaml", "evaluate.yaml"}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == expected


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_real_config_validates_with_reference_settings(backbone, method):
    cfg = load_inference_config(CONFIGS / f"{backbone}_{method}.yaml")
    latentmem = method == "latentmem"
    assert (cfg.num_frame_per_block, cfg.denoising_step_list, cfg.warp_denoising_step, cfg.context_noise) == (
        3, [1000, 750, 500, 250], True, 0)
    # the paper's budget for every method; the method-specific options at their defaults
    assert cfg.method == method
    assert cfg.model_kwargs == ModelKwargs(
        local_attn_size=12, timestep_shift=5.0, sink_size=1, memory_size=6, recent_exclude=5,
        compression_method="ae", ae_ckpt="checkpoints/ae_latent_mem.pt" if latentmem else None,
    )
    assert (cfg.model_preset, cfg.num_output_frames, cfg.seed, cfg.num_samples) == ("wan2.1-t2v-1.3b", 120, 0, 1)
    assert (cfg.latent_height, cfg.latent_width) == (60, 104)
    assert cfg.data_path == "checkpoints/moviegenbench_128_refined.txt"
    assert cfg.output_folder == f"videos/{backbone}/{method}"
    assert cfg.text_encoder.weights == "wan_models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"
    assert cfg.vae.checkpoint == "wan_models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth"
    assert cfg.use_ema == (backbone == "self_forcing")
    if backbone == "longlive":
        assert cfg.generator_ckpt == "checkpoints/longlive_base.pt"
        assert cfg.lora_ckpt == "checkpoints/longlive_lora.pt"
        assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.merge) == (256, 256.0, True)
    else:
        assert cfg.generator_ckpt == f"checkpoints/{backbone}.pt"
        assert cfg.lora_ckpt is None and cfg.adapter is None


@pytest.mark.parametrize("method", METHODS)
def test_demo_config_is_tiny_random_and_long_enough_to_retrieve(method):
    cfg = load_inference_config(CONFIGS / f"demo_{method}.yaml")
    assert may_use_random_weights(cfg.model_preset) and cfg.generator_ckpt is None
    assert cfg.text_encoder.weights is None and cfg.vae.checkpoint is None
    assert len(cfg.prompts) == 2 and cfg.data_path is None
    mk = cfg.model_kwargs
    # Window 12 / sink 1 / 3 frames per block: blocks 4 and 5 each bank 3 frames, so block 6 is the
    # first with more than R = 5 banked entries; 30 frames give retrieval in blocks 6..9.
    assert (mk.local_attn_size, mk.sink_size, mk.recent_exclude, cfg.num_frame_per_block) == (12, 1, 5, 3)
    assert cfg.num_output_frames == 30
    assert cfg.method == method


def test_overrides_reach_nested_keys_and_convert_types():
    cfg = load_inference_config(DEMO, ["model_kwargs.memory_size=4", "num_output_frames=45", "seed=7",
                                       "denoising_step_list=[1000,500]", "output_folder=/tmp/x"])
    assert cfg.model_kwargs.memory_size == 4 and isinstance(cfg, RolloutConfig)
    assert (cfg.num_output_frames, cfg.seed, cfg.denoising_step_list, cfg.output_folder) == (45, 7, [1000, 500], "/tmp/x")


def test_defaults_plus_overrides_need_no_file():
    cfg = load_inference_config(None, ["generator_ckpt=g.pt", "prompts=[a cat]"])
    assert isinstance(cfg, InferenceConfig) and cfg.prompts == ["a cat"]


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["memory_sise=3"], ["memory_sise"]),
        (["model_kwargs.memory_sise=3"], ["model_kwargs.memory_sise"]),
        (["num_output_frames=many"], ["num_output_frames", "many"]),
        (["model_kwargs.use_latentmem=true"], ["model_kwargs.use_latentmem"]),
        (["method=rag"], ["method 'rag'", "native", "deepforcing"]),
        (["method=native", "model_kwargs.memory_size=4"], ["model_kwargs.memory_size is a latentmem option", "'native'"]),
        (["model_kwargs.df_score=entropy"], ["model_kwargs.df_score is a deepforcing option"]),
        (["method=deepforcing", "model_kwargs.ae_ckpt=null", "model_kwargs.df_score=entropy"], ["df_score 'entropy'"]),
        (["method=deepforcing", "model_kwargs.ae_ckpt=null", "model_kwargs.df_recent=9"], ["leaves -1 frames for compressed"]),
        (["method=infrope", "model_kwargs.ae_ckpt=null", "model_kwargs.infrope_cut_position=5"], ["infrope_cut_position 5"]),
        (["method=deepforcing", "model_kwargs.df_score_queries=clean", "model_kwargs.df_recent=0"], ["needs clean frames"]),
        (["num_output_frames=31"], ["num_output_frames 31", "num_frame_per_block 3"]),
        (["model_kwargs.memory_size=11"], ["local_attn_size 12", "sink_size 1", "memory_size 11"]),
        (["model_kwargs.memory_size=0"], ["memory_size"]),
        (["model_kwargs.sink_size=12"], ["sink_size 12"]),
        (["model_kwargs.compression_method=pca"], ["compression_method 'pca'"]),
        (["model_kwargs.compression_method=oracle"], ["compression_method 'oracle'", "toy-world experiment"]),
        (["denoising_step_list=[1000,0]"], ["denoising_step_list"]),
        (["model_preset=wan9"], ["model_preset 'wan9'"]),
        (["model_preset=wan2.1-t2v-1.3b"], ["generator_ckpt is null"]),
        (["text_encoder.preset=umt5-xxl", "text_encoder.weights=t5.pth"], ["text_encoder.preset 'umt5-xxl'", "text_dim 32"]),
        (["lora_ckpt=lora.pt"], ["lora_ckpt and adapter"]),
        (["adapter.rank=0", "lora_ckpt=lora.pt"], ["adapter.rank"]),
        (["data_path=prompts.txt"], ["exactly one of data_path"]),
        (["latent_height=7"], ["latent_height x latent_width 7 x 8"]),
        (["num_samples=0"], ["num_samples"]),
        (["dtype=float64"], ["dtype 'float64'"]),
        (["device=tpu"], ["device 'tpu'"]),
        (["vae.decode_chunk_frames=0"], ["vae.decode_chunk_frames"]),
    ],
)
def test_bad_values_fail_naming_the_key(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_inference_config(DEMO, overrides)
    message = str(err.value)
    assert str(DEMO) in message
    for word in words:
        assert word in message


def test_real_config_without_ae_checkpoint_fails_instead_of_switching_method():
    with pytest.raises(ConfigError, match="model_kwargs.ae_ckpt is null"):
        load_inference_config(CONFIGS / "causal_forcing_latentmem.yaml", ["model_kwargs.ae_ckpt=null"])


def test_read_prompts_skips_blank_lines_and_names_missing_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n\n  second prompt  \n\n")
    cfg = load_inference_config(DEMO, [f"data_path={path}", "prompts=null"])
    assert read_prompts(cfg) == ["first prompt", "second prompt"]
    cfg = load_inference_config(DEMO, [f"data_path={tmp_path / 'absent.txt'}", "prompts=null"])
    with pytest.raises(MissingAssetError, match="absent.txt.*one prompt per line") as err:
        read_prompts(cfg)
    assert "utils.download" not in str(err.value)  # the user's own file: no released-asset download


def test_prompt_file_that_is_a_folder_or_not_utf8_is_one_clear_error(tmp_path):
    cfg = load_inference_config(DEMO, [f"data_path={tmp_path}", "prompts=null"])
    with pytest.raises(ConfigError, match=f"data_path '{tmp_path}' is a folder"):  # before: IsADirectoryError
        read_prompts(cfg)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first\ncaf\xe9 au lait\n".encode("latin-1"))
    cfg = load_inference_config(DEMO, [f"data_path={latin1}", "prompts=null"])
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(line 2, byte 9\); save the prompt file as UTF-8"):
        read_prompts(cfg)  # before: UnicodeDecodeError traceback


def test_an_error_caused_by_an_override_names_the_override():
    with pytest.raises(ConfigError) as err:  # before: "configs/demo_native.yaml: num_output_frames 20 must be ..."
        load_inference_config(DEMO, ["seed=3", "num_output_frames=20"])
    assert str(err.value).startswith(f"command-line override 'num_output_frames=20' (on {DEMO}): num_output_frames 20")
    with pytest.raises(ConfigError) as err:
        load_inference_config(DEMO, ["num_output_frames=abc"])
    assert str(err.value).startswith(f"command-line override 'num_output_frames=abc' (on {DEMO}): Value 'abc'")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # only the combination of two overrides fails: both are named
        load_inference_config(DEMO, ["num_frame_per_block=2", "num_output_frames=9"])
    assert "overrides 'num_frame_per_block=2' 'num_output_frames=9'" in str(err.value)


def test_inline_prompts_with_commas_need_quotes():
    split = load_inference_config(DEMO, ["prompts=[a fox, running in snow]"])
    assert split.prompts == ["a fox", "running in snow"]  # unquoted: a comma separates list items
    quoted = load_inference_config(DEMO, ['prompts=["a fox, running in snow", "a boat"]'])
    assert quoted.prompts == ["a fox, running in snow", "a boat"]


def test_every_grid_config_composes_its_backbones_native_config():
    for backbone in BACKBONES + ("demo",):
        native = load_inference_config(CONFIGS / f"{backbone}_native.yaml")
        for method in METHODS[1:]:
            text = (CONFIGS / f"{backbone}_{method}.yaml").read_text()
            assert f"base: {backbone}_native.yaml" in text
            cfg = load_inference_config(CONFIGS / f"{backbone}_{method}.yaml")
            differs = {k for k in vars(native) if getattr(cfg, k) != getattr(native, k)}
            allowed = {"method", "output_folder", "model_kwargs"} | ({"prompts"} if method == "infrope" else set())
            assert differs <= allowed, (backbone, method, differs)


def test_prompt_schedule_override_is_the_runs_only_video():
    cfg = load_inference_config(DEMO, ["prompt_schedule=a fox[1s] | an owl[1s#] | a hare"])
    assert cfg.prompts is not None and read_prompts(cfg) == ["a fox[1s] | an owl[1s#] | a hare"]
    with pytest.raises(ConfigError, match=r"prompt_schedule: segment 'an owl' starts at frame 30, past the end of the video "
                                          r"\(30 latent frames\)"):
        load_inference_config(DEMO, ["""prompt_schedule='{"prompts": ["a fox", "an owl"]}'""", "switch_frame_indices=[28]"])
    with pytest.raises(ConfigError, match="prompt_schedule: empty scene"):
        load_inference_config(DEMO, ["prompt_schedule=a fox | [1s#] | a hare"])


def test_longlive_jsonl_prompt_file_with_switch_frame_indices(tmp_path):
    path = tmp_path / "interactive.jsonl"
    path.write_text('{"prompts": ["a fox", "an owl"]}\n\n{"prompts": ["a boat", "a storm"]}\n')
    cfg = load_inference_config(DEMO, [f"data_path={path}", "prompts=null", "switch_frame_indices=[4]"])
    assert read_prompts(cfg) == ['{"prompts": ["a fox", "an owl"]}', '{"prompts": ["a boat", "a storm"]}']
    path.write_text('{"prompts": ["a fox", "an owl"]}\n\n{"prompts": ["a boat", "a storm", "a calm"]}\n')
    with pytest.raises(ConfigError, match=rf"data_path '{path}' line 3: 3 prompts need 2 switch_frame_indices, got 1"):
        read_prompts(cfg)


def test_native_video_longer_than_the_rope_table_fails_before_loading():
    """native rotates frame f at position f: the demo's 1024-position table allows 1023 frames of 3-frame blocks;
    latentmem's window-relative positions have no such bound."""
    load_inference_config("configs/demo_native.yaml", ["num_output_frames=1023"])
    with pytest.raises(ConfigError) as err:
        load_inference_config("configs/demo_native.yaml", ["num_output_frames=1026"])
    assert "num_output_frames 1026" in str(err.value) and "1024 RoPE positions" in str(err.value) and "at most 1023" in str(err.value)
    assert load_inference_config(DEMO, ["num_output_frames=1026"]).num_output_frames == 1026

"""generate_latent.py / generate_latent.sh: config, prompt sample, sharding, resume and corruption
handling, on the random-weight demo backbone."""
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import generate_latent
from corpus.folder import SETTINGS_FILE, claim_corpus_folder
from corpus.config import GenerateLatentConfig, hashed_settings, load_generate_latent_config
from utils.settings import config_hash
from inference_job.config import InferenceConfig
from corpus.files import ExpectedVideo, LatentFiles, latents_problem, pt_problem
from corpus.jobs import latent_jobs, sample_prompt_indices
from utils.video_io import read_video
from pipeline.generation_config import GenerationConfig
from pipeline.sample import sample_seed
from utils import latent_corpus as lc
from utils.atomic import stale_temporaries
from utils.config import ConfigError
from utils.distributed import shard

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "generate_latent_demo.yaml"
REAL = REPO / "configs" / "generate_latent.yaml"
FRAMES = 15  # 5 blocks: the 12-frame window (sink 3) fills and evicts
# 4 of the 8 demo prompts, the first also decoded, the reference .pt layout too
OVERRIDES = [f"num_output_frames={FRAMES}", "max_video_saves=1", "save_pt=true"]
# One intra-op thread everywhere: the 2 CPU cores are shared, and every run computes alike.
ENV = {"OMP_NUM_THREADS": "1"}
RUN_FILES = ("summary.json", "index.json.lock")  # per-run files, not corpus content


def run_script(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **ENV, **(env or {})},
                          timeout=600)


def generate(folder: Path, *overrides: str) -> int:
    """One in-process run (rank 0 of 1)."""
    return generate_latent.main(["--config", str(DEMO), f"output_folder={folder}", *OVERRIDES, *overrides])


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The demo corpus of one uninterrupted single-process run."""
    folder = tmp_path_factory.mktemp("reference") / "corpus"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert generate(folder) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


def corpus_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name not in RUN_FILES)


def assert_same_corpus(folder: Path, reference: Path) -> None:
    """File for file and byte for byte (the run's own summary and lock file aside)."""
    assert corpus_files(folder) == corpus_files(reference)
    for name in corpus_files(reference):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# ---------------------------------------------------------------- config


def test_real_config_has_the_reference_settings():
    cfg = load_generate_latent_config(REAL)
    assert (cfg.generator_ckpt, cfg.lora_ckpt) == ("checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt")
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.use_ema) == (256, 256.0, False)
    mk = cfg.model_kwargs
    assert (mk.sink_size, mk.local_attn_size, cfg.method, cfg.num_frame_per_block) == (3, 12, "native", 3)
    assert (cfg.num_output_frames, cfg.latent_height, cfg.latent_width) == (90, 60, 104)
    assert cfg.denoising_step_list == [1000, 750, 500, 250] and cfg.warp_denoising_step
    assert cfg.data_path == "checkpoints/vidprom_filtered_extended.txt" and cfg.prompts is None
    assert (cfg.sample_ratio, cfg.seed, cfg.max_video_saves, cfg.save_pt) == (0.1, 0, 2, False)
    assert cfg.vae.checkpoint == "wan_models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth"
    assert cfg.text_encoder.weights == "wan_models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"


def test_demo_config_is_tiny_random_and_cpu_sized():
    cfg = load_generate_latent_config(DEMO)
    assert cfg.model_preset == "demo" and cfg.generator_ckpt is None
    assert cfg.text_encoder.weights is None and cfg.vae.checkpoint is None
    assert len(cfg.prompts) == 8 and cfg.sample_ratio == 0.5
    assert (cfg.latent_height, cfg.latent_width, cfg.num_output_frames) == (8, 8, 18)


def test_corpus_and_inference_configs_share_every_generation_key_and_default():
    cfg = load_generate_latent_config(DEMO, ["seed=5", "model_kwargs.sink_size=2", "num_output_frames=6",
                                             "vae.decode_chunk_frames=2", "output_folder=/x"])
    assert isinstance(cfg, GenerationConfig) and issubclass(InferenceConfig, GenerationConfig)
    assert (cfg.seed, cfg.model_kwargs.sink_size, cfg.num_output_frames, cfg.output_folder) == (5, 2, 6, "/x")
    corpus, inference = GenerateLatentConfig(), InferenceConfig()
    differing = {f.name for f in dataclasses.fields(GenerationConfig) if getattr(corpus, f.name) != getattr(inference, f.name)}
    assert differing == {"num_output_frames"}  # 90 corpus frames per video, 120 for inference


@pytest.mark.parametrize("override, message", [
    ("sample_ratio=0", "sample_ratio must be in (0, 1]"),
    ("sample_ratio=1.5", "sample_ratio must be in (0, 1]"),
    ("max_video_saves=-1", "max_video_saves must be >= 0"),
    ("max_video_saves=two", "max_video_saves"),
    ("latent_dtype=int8", "latent_dtype 'int8' is not one of"),
    ("sample_ration=0.1", "sample_ration"),
    ("num_output_frames=10", "num_output_frames 10 must be a positive multiple of num_frame_per_block 3"),
    ("model_kwargs.sink_size=12", "sink_size 12 must be in [0, local_attn_size 12)"),
    ("data_path=prompts.txt", "set exactly one of data_path (a prompt file) and prompts"),
    ("output_folder=''", "output_folder is empty"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_generate_latent_config(DEMO, [override])
    assert str(DEMO) in str(err.value)


def test_bad_override_on_the_command_line_exits_2_with_the_key(capsys, tmp_path):
    assert generate(tmp_path / "c", "sample_ratio=2") == 2
    assert "sample_ratio must be in (0, 1] (fraction of the prompts to generate), got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_missing_own_prompt_file_names_path_without_a_release_download(capsys, tmp_path):
    code = generate(tmp_path / "c", "prompts=null", f"data_path={tmp_path / 'vidprom.txt'}")
    err = capsys.readouterr().err
    assert code == 2 and "vidprom.txt" in err and "one prompt per line" in err
    assert "utils.download" not in err  # the user's own file: no released-asset download


# ---------------------------------------------------------------- prompt sample and positions


def test_prompt_sample_follows_the_reference_rule():
    state = random.getstate()
    random.seed(0)
    expected = sorted(random.sample(range(1000), 100))
    random.setstate(state)
    assert sample_prompt_indices(1000, 0.1, 0) == expected
    assert len(sample_prompt_indices(5, 0.1, 0)) == 1  # at least one
    assert sample_prompt_indices(7, 1.0, 3) == list(range(7))
    assert sample_prompt_indices(1000, 0.1, 1) != expected


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_of_any_world_size_partition_the_same_positions(world):
    prompts = [f"prompt {i}" for i in range(40)]
    jobs = latent_jobs(prompts, 0.5, 0)
    assert [j.position for j in jobs] == list(range(20))
    assert [j.video_id for j in jobs[:2]] == ["latent_000000", "latent_000001"]
    shards = [shard(latent_jobs(prompts, 0.5, 0), rank, world) for rank in range(world)]
    assert sorted((j for s in shards for j in s), key=lambda j: j.position) == jobs
    assert all(j.position % world == rank for rank, s in enumerate(shards) for j in s)


def test_each_video_seed_is_the_inference_seed_of_its_prompt_line():
    prompts = [f"prompt {i}" for i in range(10)]
    jobs = latent_jobs(prompts, 0.3, 7)
    assert [j.prompt_index for j in jobs] == sample_prompt_indices(10, 0.3, 7)
    for job in jobs:
        assert job.prompt == prompts[job.prompt_index]
        assert job.seed == sample_seed(7, job.prompt_index, 0)
    assert len({j.seed for j in jobs}) == len(jobs)


def test_config_hash_ignores_run_only_keys_and_follows_value_keys():
    def chash(*overrides, prompts=("a", "b")):
        return config_hash(hashed_settings(load_generate_latent_config(DEMO, list(overrides)), list(prompts), "cpu", "float32"))

    base = chash()
    assert chash("output_folder=/elsewhere", "max_video_saves=0", "save_pt=true", "skip_existing=false") == base
    for changed in (chash("seed=1"), chash("num_output_frames=9"), chash("latent_dtype=bfloat16"),
                    chash("model_kwargs.sink_size=1"), chash(prompts=("a", "c"))):
        assert changed != base


def test_config_hash_follows_the_generator_weights_file(tmp_path):
    """A replaced checkpoint at the same path changes the hash (size / mtime), so a resumed corpus refuses it."""
    ckpt = tmp_path / "generator.pt"
    ckpt.write_bytes(b"0" * 10)

    def chash():
        return config_hash(hashed_settings(load_generate_latent_config(DEMO, [f"generator_ckpt={ckpt}"]), ["a"], "cpu", "float32"))

    first = chash()
    assert first == chash()
    ckpt.write_bytes(b"0" * 11)
    assert chash() != first


# ---------------------------------------------------------------- file checks


def expected_video(frames: int = 6) -> ExpectedVideo:
    return ExpectedVideo({"prompt": "a fox", "seed": "7", "config_hash": "abc"}, frames, [16, 8, 8], "float32")


def test_latent_file_checks_name_each_problem(tmp_path):
    files = LatentFiles(tmp_path, "latent_000000", save_pt=True, save_video=False)
    expected = expected_video()
    assert latents_problem(files, expected) == "no latent file"
    lc.write_video(tmp_path, files.video_id, torch.zeros(6, 16, 8, 8), expected.metadata)
    assert latents_problem(files, expected) is None
    assert lc.read_index(tmp_path)[files.video_id] == expected.index_entry(files)

    lc.write_video(tmp_path, files.video_id, torch.zeros(3, 16, 8, 8), expected.metadata)
    assert latents_problem(files, expected) == "latent file has num_frames 3, expected 6"
    lc.write_video(tmp_path, files.video_id, torch.zeros(6, 16, 8, 8), {**expected.metadata, "seed": "8"})
    assert latents_problem(files, expected) == "latent file metadata ['seed'] differ from this config's"
    lc.write_video(tmp_path, files.video_id, torch.zeros(6, 16, 8, 8).bfloat16(), expected.metadata)
    assert latents_problem(files, expected) == "latent file has dtype bfloat16, expected float32"

    lc.write_video(tmp_path, files.video_id, torch.zeros(6, 16, 8, 8), expected.metadata)
    data = files.latents.read_bytes()
    files.latents.write_bytes(data[: len(data) - 100])  # truncated
    assert latents_problem(files, expected) == "latent file is truncated or unreadable"
    files.latents.write_bytes(b"\xff" * 16 + data[16:])  # bad header
    assert latents_problem(files, expected) == "latent file is truncated or unreadable"


def test_pt_file_checks(tmp_path):
    files = LatentFiles(tmp_path, "latent_000000", save_pt=True, save_video=False)
    expected = expected_video()
    assert pt_problem(files, expected) == "no .pt file"
    files.pt.parent.mkdir()
    torch.save(torch.zeros(6, 16, 8, 8), files.pt)
    assert pt_problem(files, expected) is None
    torch.save(torch.zeros(6, 16, 8, 8, dtype=torch.bfloat16), files.pt)
    assert pt_problem(files, expected) == ".pt file does not hold a float32 tensor [6, 16, 8, 8]"
    files.pt.write_bytes(b"not a zip")
    assert pt_problem(files, expected).startswith(".pt file is unreadable")


def test_other_settings_in_a_corpus_folder_stop_with_the_differing_keys(tmp_path):
    settings = {"seed": 0, "model_kwargs": {"sink_size": 3}}
    claim_corpus_folder(tmp_path, settings, config_hash(settings), skip_existing=True, is_main=True)
    claim_corpus_folder(tmp_path, settings, config_hash(settings), skip_existing=True, is_main=False)
    other = {"seed": 1, "model_kwargs": {"sink_size": 1}}
    with pytest.raises(ConfigError, match=r"model_kwargs.sink_size: 3 -> 1\n  seed: 0 -> 1") as err:
        claim_corpus_folder(tmp_path, other, config_hash(other), skip_existing=True, is_main=False)
    assert "Use another output_folder" in str(err.value)
    claim_corpus_folder(tmp_path, other, config_hash(other), skip_existing=False, is_main=True)  # takes it over
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["settings"] == other


# ---------------------------------------------------------------- runs


def test_one_process_writes_the_corpus_the_ae_reader_expects(reference):
    ids = [f"latent_{i:06d}" for i in range(4)]
    assert corpus_files(reference) == sorted(
        [f"videos/{i}.safetensors" for i in ids] + [f"pt/{i}.pt" for i in ids]
        + ["verification_videos/latent_000000.mp4", "index.json", SETTINGS_FILE])
    index = lc.read_index(reference)
    cfg = load_generate_latent_config(DEMO)
    positions = sample_prompt_indices(len(cfg.prompts), cfg.sample_ratio, cfg.seed)
    settings = json.loads((reference / SETTINGS_FILE).read_text())
    for pos, vid in enumerate(ids):
        entry = index[vid]
        assert (entry["num_frames"], entry["frame_shape"], entry["dtype"]) == (FRAMES, [16, 8, 8], "float32")
        meta = entry["metadata"]
        assert meta["prompt"] == cfg.prompts[positions[pos]] and json.loads(meta["position"]) == pos
        assert json.loads(meta["seed"]) == sample_seed(0, positions[pos], 0)
        assert json.loads(meta["backbone"])["model_preset"] == "demo"
        assert meta["config_hash"] == settings["config_hash"]
        latents = lc.read_frames(reference / entry["file"], 0, FRAMES)
        assert torch.isfinite(latents).all() and latents.std() > 0.1
        assert torch.equal(torch.load(reference / "pt" / f"{vid}.pt", weights_only=True), latents)
    assert read_video(reference / "verification_videos/latent_000000.mp4").shape == (1 + 4 * (FRAMES - 1), 64, 64, 3)
    s = summary(reference)
    assert (s["num_videos"], s["num_generated"], s["num_complete"], s["num_frames"]) == (4, 4, 0, 4 * FRAMES)
    assert s["bytes_written"] == sum((reference / f).stat().st_size for f in corpus_files(reference)
                                     if not f.endswith(".json"))
    assert s["label"].startswith("RANDOM-WEIGHT DEMO") and s["seconds_per_video"] > 0


def test_video_equals_a_rollout_of_its_prompt_with_its_seed(reference, tmp_path, one_thread):
    from pipeline.build import build_components
    from pipeline.sample import sample_video

    cfg = load_generate_latent_config(DEMO, [f"num_output_frames={FRAMES}"])
    job = latent_jobs(cfg.prompts, cfg.sample_ratio, cfg.seed)[2]
    result = sample_video(job.prompt, job.seed, cfg, build_components(cfg, torch.device("cpu"), torch.float32, [job.prompt]), False)
    assert torch.equal(result.latents[0], lc.read_frames(reference / "videos/latent_000002.safetensors", 0, FRAMES))


def test_second_run_skips_every_complete_video(reference, tmp_path, one_thread):
    folder = tmp_path / "corpus"
    shutil.copytree(reference, folder)
    mtimes = {f: (folder / f).stat().st_mtime_ns for f in corpus_files(folder)}
    assert generate(folder) == 0
    s = summary(folder)
    assert (s["num_generated"], s["num_complete"], s["bytes_written"]) == (0, 4, 0)
    assert {f: (folder / f).stat().st_mtime_ns for f in corpus_files(folder)} == mtimes


def test_skip_existing_false_regenerates_every_video_to_the_same_values(reference, tmp_path, one_thread):
    folder = tmp_path / "corpus"
    shutil.copytree(reference, folder)
    assert generate(folder, "skip_existing=false") == 0
    assert_same_corpus(folder, reference)
    s = summary(folder)
    assert (s["num_generated"], s["num_regenerated"]) == (4, 4)
    assert {v["reason"] for v in s["videos"]} == {"skip_existing is false"}


def test_two_torchrun_processes_write_the_files_and_values_of_one(reference, tmp_path):
    folder = tmp_path / "two"
    result = run_script(["bash", "generate_latent.sh", f"output_folder={folder}", *OVERRIDES],
                        env={"NGPU": "2", "CONFIG": str(DEMO)})
    assert result.returncode == 0, result.stderr
    assert "rank 0/2" in result.stderr and "rank 1/2" in result.stderr
    assert_same_corpus(folder, reference)
    s = summary(folder)
    assert (s["world_size"], s["num_videos"], s["num_generated"]) == (2, 4, 4)
    assert [v["video_id"] for v in s["videos"]] == [f"latent_{i:06d}" for i in range(4)]


KILL_ON_THIRD_WRITE = """
import os, signal, sys
from pathlib import Path
real_write, calls = Path.write_bytes, []

def write_then_die(path, data):
    if not path.name.endswith(".safetensors"):
        return real_write(path, data)
    calls.append(path)
    if len(calls) < 3:
        return real_write(path, data)
    real_write(path, data[: len(data) // 2])  # die half-way through writing the third video
    os.kill(os.getpid(), signal.SIGKILL)

Path.write_bytes = write_then_die
import generate_latent
sys.exit(generate_latent.main(sys.argv[1:]))
"""


def test_killed_run_then_rerun_completes_the_corpus_without_partial_files(reference, tmp_path, one_thread):
    folder = tmp_path / "corpus"
    killed = run_script([sys.executable, "-c", KILL_ON_THIRD_WRITE, "--config", str(DEMO), f"output_folder={folder}",
                         *OVERRIDES])
    assert killed.returncode == -9, killed.stderr
    assert sorted(lc.read_index(folder)) == ["latent_000000", "latent_000001"]
    assert not (folder / "videos/latent_000002.safetensors").exists()
    assert len(stale_temporaries(folder / "videos/latent_000002.safetensors")) == 1  # the dead writer's

    assert generate(folder) == 0
    assert_same_corpus(folder, reference)
    assert not list(folder.rglob(".*"))
    s = summary(folder)
    assert (s["num_generated"], s["num_complete"], s["num_regenerated"]) == (2, 2, 0)


def test_corrupt_stale_and_unlisted_files_are_detected_and_fixed(reference, tmp_path, one_thread):
    folder = tmp_path / "corpus"
    shutil.copytree(reference, folder)
    videos = folder / "videos"
    data = (videos / "latent_000000.safetensors").read_bytes()
    (videos / "latent_000000.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    data = (videos / "latent_000001.safetensors").read_bytes()
    (videos / "latent_000001.safetensors").write_bytes(b"\x00" * 8 + data[8:])  # bad header
    meta = lc.read_metadata(videos / "latent_000002.safetensors")
    own = {k: v for k, v in meta.items() if k not in lc.RESERVED_METADATA}
    lc.write_video(folder, "latent_000002", torch.zeros(FRAMES - 3, 16, 8, 8), own)  # wrong frame count
    index = lc.read_index(folder)
    del index["latent_000003"]  # complete file, index out of sync
    (folder / "index.json").write_text(json.dumps({"format": lc.FORMAT_NAME, "version": lc.FORMAT_VERSION, "videos": index}))
    (folder / "pt/latent_000003.pt").unlink()
    (folder / ".index.json.x1y2.tmp.json").write_text("{")  # a writer died mid index update
    unlisted_mtime = (videos / "latent_000003.safetensors").stat().st_mtime_ns

    assert generate(folder) == 0
    assert_same_corpus(folder, reference)
    assert (videos / "latent_000003.safetensors").stat().st_mtime_ns == unlisted_mtime  # re-listed, not regenerated
    s = summary(folder)
    assert (s["num_generated"], s["num_regenerated"], s["num_complete"], s["num_relisted"]) == (3, 3, 1, 1)
    reasons = {v["video_id"]: v["reason"] for v in s["videos"]}
    assert reasons == {
        "latent_000000": "latent file is truncated or unreadable",
        "latent_000001": "latent file is truncated or unreadable",
        "latent_000002": f"latent file has num_frames {FRAMES - 3}, expected {FRAMES}",
        "latent_000003": None,
    }
    assert [v["files_written"] for v in s["videos"]][3] == ["pt/latent_000003.pt"]


def test_unreadable_index_is_rebuilt_from_the_files(reference, tmp_path, one_thread):
    folder = tmp_path / "corpus"
    shutil.copytree(reference, folder)
    (folder / "index.json").write_text('{"format": "longlive-rag-latent-co')
    assert generate(folder) == 0
    assert_same_corpus(folder, reference)
    assert summary(folder)["num_generated"] == 0


def test_other_settings_into_the_same_folder_stop_before_generating(reference, tmp_path, capsys):
    folder = tmp_path / "corpus"
    shutil.copytree(reference, folder)
    assert generate(folder, "seed=1") == 2
    err = capsys.readouterr().err
    assert "holds a corpus generated with other settings" in err and "seed: 0 -> 1" in err
    assert_same_corpus(folder, reference)


@pytest.mark.slow
def test_corpus_trains_the_ae_whose_checkpoint_drives_latentmem_inference(reference, tmp_path):
    """The demo corpus (what generate_latent.sh writes, see the torchrun test) -> train_ae_delta.sh (one epoch,
    toy AE) -> inference.sh demo latentmem with the trained checkpoint, through the real scripts."""
    from ae.model import load_retrieval_autoencoder

    corpus, ae_dir, videos = reference, tmp_path / "ae", tmp_path / "videos"
    result = run_script(["bash", "train_ae_delta.sh", f"data_dir={corpus}", "epochs=1", f"output_dir={ae_dir}",
                         "batch_size=8", "chunks_per_video=4"], env={"CONFIG": "ae/configs/toy_delta.yaml"})
    assert result.returncode == 0, result.stderr
    assert "epoch 0: train total" in result.stdout
    ae = load_retrieval_autoencoder(ae_dir / "best.pt")
    assert (ae.cfg.in_channels, ae.cfg.spatial_h, ae.cfg.spatial_w) == (16, 8, 8)

    frames = 24  # 8 blocks of the demo's sink 1 / window 12: retrieval in the last two
    result = run_script(["bash", "inference.sh", "demo", "latentmem", f"model_kwargs.ae_ckpt={ae_dir / 'best.pt'}",
                         f"output_folder={videos}", f"num_output_frames={frames}", "prompts=[a red fox in snow]"])
    assert result.returncode == 0, result.stderr
    run = json.loads((videos / "summary.json").read_text())
    assert "retrieval encoder" not in run["random_weight_components"]
    assert run["config"]["model_kwargs"]["ae_ckpt"] == str(ae_dir / "best.pt")
    # the logged similarities are those of the trained encoder on the generated frames
    log = json.loads((videos / "0000-0.context.json").read_text())
    embeddings = ae.encode(torch.load(videos / "0000-0.latents.pt", weights_only=True))  # [F, D]
    decisions = [b["retrieval"] for b in log["blocks"] if b["retrieval"] is not None]
    assert decisions
    for block in decisions:
        (selected,), (similarities,) = block["selected_frames"], block["similarities"]
        expected = embeddings[selected] @ embeddings[block["query_frame"]]
        assert torch.allclose(torch.tensor(similarities), expected, atol=1e-4)

"""python -m utils.download: the files each config reads, fetched through huggingface_hub (recorded here)."""
import pytest

from utils.assets import DOWNLOAD
from utils.download import RAG_REPO, WAN_REPO, fetch, main, selection

WAN_FILES = ["Wan2.1_VAE.pth", "google/umt5-xxl/*", "models_t5_umt5-xxl-enc-bf16.pth"]  # not the diffusion weights
PROMPTS = "checkpoints/moviegenbench_128_refined.txt"


@pytest.mark.parametrize("target, rag_files", [
    ("causal_forcing", ["checkpoints/ae_latent_mem.pt", "checkpoints/causal_forcing.pt", PROMPTS]),
    ("self_forcing", ["checkpoints/ae_latent_mem.pt", PROMPTS, "checkpoints/self_forcing.pt"]),
    ("longlive", ["checkpoints/ae_latent_mem.pt", "checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt", PROMPTS]),
    ("generate_latent", ["checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt", "checkpoints/vidprom_filtered_extended.txt"]),
    ("toy_data", ["toydatasets/latent_*.pt"]),
    ("configs/longlive_native.yaml", ["checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt", PROMPTS]),
])
def test_selection_is_exactly_the_files_the_configs_read(target, rag_files):
    expected = {RAG_REPO: rag_files} if target == "toy_data" else {WAN_REPO: WAN_FILES, RAG_REPO: rag_files}
    assert selection([target]) == expected


def test_all_is_the_union():
    union = selection(["causal_forcing", "self_forcing", "longlive", "generate_latent", "toy_data"])
    assert selection(["all"]) == union and len(union[RAG_REPO]) == 8


def test_fetch_calls_huggingface_hub_per_repository_into_the_config_paths(tmp_path):
    calls = []
    fetch(["longlive"], tmp_path, download=lambda **kwargs: calls.append(kwargs))
    assert calls == [
        {"repo_id": WAN_REPO, "local_dir": str(tmp_path / "wan_models/Wan2.1-T2V-1.3B"), "allow_patterns": WAN_FILES},
        {"repo_id": RAG_REPO, "local_dir": str(tmp_path / "."), "allow_patterns": [
            "checkpoints/ae_latent_mem.pt", "checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt", PROMPTS]},
    ]


def test_default_downloader_is_huggingface_hub_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: calls.append(kwargs))
    assert main(["toy_data", "--root", str(tmp_path)]) == 0
    assert calls == [{"repo_id": RAG_REPO, "local_dir": str(tmp_path / "."), "allow_patterns": ["toydatasets/latent_*.pt"]}]


def test_user_files_are_skipped_and_unknown_targets_rejected(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("model_preset: demo\ntext_encoder: {preset: demo, weights: null}\nvae: {preset: demo, checkpoint: null}\n"
                      "latent_height: 8\nlatent_width: 8\ndata_path: my_prompts.txt\n")
    assert selection([str(config)]) == {}
    assert "skipping 'my_prompts.txt'" in capsys.readouterr().out
    assert main(["demo"]) == 2
    assert "unknown download target 'demo'" in capsys.readouterr().err


def test_missing_file_error_prints_the_download_command():
    assert DOWNLOAD.startswith("python -m utils.download <backbone>")

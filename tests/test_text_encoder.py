import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from utils.assets import MissingAssetError
from wan.t5_conversion import TIED_ALIASES, convert_key, umt5_config_from_reference
from wan.text_encoder import (
    ByteTokenizer,
    PretrainedTokenizer,
    TextEncoderLoadError,
    WanTextEncoder,
    clean_prompt,
    load_umt5_encoder,
    umt5_config,
)
from wan.text_encoder_config import text_encoder_preset

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def t5_tiny():
    return torch.load(FIXTURES / "t5_tiny.pt", weights_only=True)


@pytest.fixture
def original_file(t5_tiny, tmp_path):
    """The fixture weights saved the way Wan ships them: a plain reference-named state dict."""
    path = tmp_path / "models_t5_tiny.pth"
    torch.save(t5_tiny["state_dict"], path)
    return path


def fixture_tokenizer(t5_tiny):
    """Returns the fixture's ids/mask whatever the prompts are (two prompts expected)."""
    def tokenize(prompts, text_len):
        assert len(prompts) == 2 and text_len == t5_tiny["ids"].shape[1]
        return t5_tiny["ids"], t5_tiny["mask"]
    return tokenize


def run(model, t5_tiny):
    with torch.no_grad():
        return model(input_ids=t5_tiny["ids"], attention_mask=t5_tiny["mask"]).last_hidden_state


def test_original_file_reproduces_reference_output(t5_tiny, original_file):
    config = umt5_config_from_reference(t5_tiny["config"])
    model = load_umt5_encoder(original_file, config, "cpu", torch.float32)
    err = (run(model, t5_tiny) - t5_tiny["output"]).abs().max().item()
    assert err < 5e-6, err
    assert model.shared.weight is model.encoder.embed_tokens.weight


def test_encode_zeroes_padding_like_reference_wrapper(t5_tiny, original_file):
    model = load_umt5_encoder(original_file, umt5_config_from_reference(t5_tiny["config"]), "cpu", torch.float32)
    encoder = WanTextEncoder(model, fixture_tokenizer(t5_tiny), text_len=12)
    out = encoder.encode(["long prompt", "short prompt"])
    expected = t5_tiny["output_padding_zeroed"]
    assert out.shape == expected.shape == (2, 12, 32)
    assert (out - expected).abs().max().item() < 5e-6
    assert torch.equal(out[1, 7:], torch.zeros(5, 32))


def test_umt5_xxl_preset_has_exactly_the_manifest_parameters():
    manifest = json.loads((FIXTURES / "manifest_umt5_xxl_encoder.json").read_text())
    with torch.device("meta"):
        model = UMT5EncoderModel(umt5_config(text_encoder_preset("umt5-xxl")))
    model_shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    # The only model key without a file entry is transformers' alias of the token embedding.
    assert set(TIED_ALIASES) <= model_shapes.keys()
    assert model.encoder.embed_tokens.weight is model.shared.weight
    stored = {k: s for k, s in model_shapes.items() if k not in TIED_ALIASES}
    converted = {convert_key(e["name"]): e["shape"] for e in manifest["entries"]}
    assert None not in converted
    assert converted == stored
    assert len(converted) == manifest["num_entries"] == 242
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]


def test_diffusers_folder_loads_and_matches_original_file(t5_tiny, original_file, tmp_path):
    config = umt5_config_from_reference(t5_tiny["config"])
    model = load_umt5_encoder(original_file, config, "cpu", torch.float32)
    folder = tmp_path / "text_encoder"
    model.save_pretrained(folder)
    reloaded = load_umt5_encoder(folder, config, "cpu", torch.float32)
    assert torch.equal(run(reloaded, t5_tiny), run(model, t5_tiny))
    assert (run(reloaded, t5_tiny) - t5_tiny["output"]).abs().max().item() < 5e-6


def test_diffusers_folder_with_other_config_is_rejected(t5_tiny, original_file, tmp_path):
    model = load_umt5_encoder(original_file, umt5_config_from_reference(t5_tiny["config"]), "cpu", torch.float32)
    model.save_pretrained(tmp_path / "text_encoder")
    wider = umt5_config_from_reference({**t5_tiny["config"], "dim_ffn": 128})
    with pytest.raises(TextEncoderLoadError, match=r"config\.json.*d_ff=64 \(preset 128\)"):
        load_umt5_encoder(tmp_path / "text_encoder", wider, "cpu", torch.float32)


def test_folder_without_config_is_rejected(t5_tiny, tmp_path):
    with pytest.raises(TextEncoderLoadError, match="without config.json"):
        load_umt5_encoder(tmp_path, umt5_config_from_reference(t5_tiny["config"]), "cpu", torch.float32)


def test_mismatched_keys_raise_naming_file_and_keys(t5_tiny, tmp_path):
    state = dict(t5_tiny["state_dict"])
    del state["blocks.1.ffn.fc2.weight"]
    state["blocks.0.extra.weight"] = torch.zeros(3)
    state["norm.weight"] = torch.zeros(31)
    path = tmp_path / "broken_t5.pth"
    torch.save(state, path)
    with pytest.raises(TextEncoderLoadError) as info:
        load_umt5_encoder(path, umt5_config_from_reference(t5_tiny["config"]), "cpu", torch.float32)
    msg = str(info.value)
    assert "broken_t5.pth" in msg
    assert "1 missing keys (encoder.block.1.layer.1.DenseReluDense.wo.weight)" in msg
    assert "1 unexpected keys (blocks.0.extra.weight)" in msg
    assert "encoder.final_layer_norm.weight (31,) != (32,)" in msg


def test_missing_weights_and_tokenizer_raise_missing_asset_error(tmp_path):
    with pytest.raises(MissingAssetError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        WanTextEncoder.from_preset("umt5-xxl", None, None, "cpu", torch.float32, text_len=512)
    absent = tmp_path / "wan" / "models_t5_umt5-xxl-enc-bf16.pth"
    with pytest.raises(MissingAssetError, match=str(absent)):
        WanTextEncoder.from_preset("umt5-xxl", str(absent), None, "cpu", torch.float32, text_len=512)
    # Weights present but no tokenizer beside them (Diffusers layout expects ../tokenizer/).
    demo = WanTextEncoder.from_preset("demo", None, None, "cpu", torch.float32, text_len=16)
    demo.model.save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(MissingAssetError, match=str(tmp_path / "tokenizer")):
        WanTextEncoder.from_preset("demo", str(tmp_path / "text_encoder"), None, "cpu", torch.float32, text_len=16)


def test_prompt_cache_runs_model_once_per_prompt():
    encoder = WanTextEncoder.from_preset("demo", None, None, "cpu", torch.float32, text_len=16)
    batches = []
    encoder.model.register_forward_hook(lambda module, args, kwargs_out: batches.append(1))
    first = encoder.encode(["a red fox"])
    again = encoder.encode(["a red fox"])
    assert len(batches) == 1 and torch.equal(first, again)
    mixed = encoder.encode(["a dog", "a red fox", "a dog"])
    assert len(batches) == 2
    assert torch.equal(mixed[1], first[0]) and torch.equal(mixed[0], mixed[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_demo_preset_encodes_with_zeros_after_each_prompt(dtype):
    prompts = ["a cat", "a slow red fox at dusk"]
    encoder = WanTextEncoder.from_preset("demo", None, None, "cpu", dtype, text_len=16)
    out = encoder.encode(prompts)
    assert out.shape == (2, 16, 32) and out.dtype == dtype
    lengths = [len("a cat") + 1, 16]  # bytes + end-of-sequence; the second prompt is truncated
    for row, n in enumerate(lengths):
        assert (out[row, :n].abs().sum(dim=-1) > 0).all()
        assert torch.equal(out[row, n:], torch.zeros_like(out[row, n:]))
    rebuilt = WanTextEncoder.from_preset("demo", None, None, "cpu", dtype, text_len=16).encode(prompts)
    assert torch.equal(out, rebuilt)


def test_byte_tokenizer_pads_and_keeps_end_token_when_truncating():
    ids, mask = ByteTokenizer()(["hi", "héllo"], text_len=4)
    assert ids.tolist() == [[106, 107, 1, 0], [106, 197, 171, 1]]  # 'é' is two UTF-8 bytes
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_clean_prompt_unescapes_html_and_collapses_whitespace():
    assert clean_prompt("  a &amp;amp; b \n\t c ") == "a & b c"


def test_pretrained_tokenizer_folder_pads_to_text_len(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path / "tok")
    ids, mask = PretrainedTokenizer(tmp_path / "tok")(["a cat", "cat dog a cat a"], text_len=5)
    assert ids.tolist() == [[3, 4, 1, 0, 0], [4, 2, 3, 4, 1]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]

"""Every torch.load site of the project on a file of random bytes: one line naming the file, never unsafe advice."""
import pickle

import pytest
import torch

from utils.checkpoint_io import CorruptCheckpointError, load_checkpoint


def random_file(tmp_path, name="bad.pt"):
    path = tmp_path / name
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    return path


def load_backbone(path):
    from wan.checkpoint import load_backbone_checkpoint
    from wan.model import CausalWanModel
    from wan.model_config import model_preset

    load_backbone_checkpoint(CausalWanModel(model_preset("demo")), path)


def load_lora(path):
    from wan.lora import read_lora_state

    read_lora_state(path)


def load_text_encoder(path):
    from wan.text_encoder import _load_original, umt5_config
    from wan.text_encoder_config import text_encoder_preset

    _load_original(path, umt5_config(text_encoder_preset("demo")))


def load_vae(path):
    from wan.vae import WanVAE

    WanVAE.from_preset("demo", path)


def load_ae(path):
    from ae.model import load_retrieval_autoencoder

    load_retrieval_autoencoder(path)


SITES = {"backbone checkpoint (generator_ckpt)": load_backbone, "LoRA checkpoint (lora_ckpt)": load_lora,
         "text encoder weights (text_encoder.weights)": load_text_encoder, "VAE checkpoint (vae.checkpoint)": load_vae,
         "retrieval autoencoder checkpoint": load_ae}


@pytest.mark.parametrize("what", list(SITES))
def test_random_bytes_are_reported_as_a_corrupt_file(what, tmp_path):
    path = random_file(tmp_path)
    with pytest.raises(CorruptCheckpointError) as err:  # before: mmap advice or "set weights_only=False"
        SITES[what](path)
    message = str(err.value)
    assert message.startswith(f"{what} '{path}': file is corrupt or not a checkpoint")
    assert "weights_only" not in message and "mmap" not in message


def test_a_truncated_checkpoint_and_an_unsafe_pickle_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(CorruptCheckpointError, match="file is corrupt or not a checkpoint"):
        load_checkpoint(truncated, "test file", "fix")
    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(print))  # a pickle of a callable: weights_only refuses it
    with pytest.raises(CorruptCheckpointError) as err:
        load_checkpoint(unsafe, "test file", "fix")
    assert "weights_only" not in str(err.value)
    torch.testing.assert_close(load_checkpoint(good, "test file", "fix")["w"], torch.ones(1000))

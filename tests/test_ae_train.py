"""AE training loop (ae/train.py, train_ae_delta.py/.sh): loss goes down, split by video,
atomic loadable checkpoints, resume equals an uninterrupted run, TensorBoard terms, config and
data errors, and 2 CPU processes (gloo) equal one process on the same global batch."""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ae.data import LatentChunkDataset
from ae.model import RetrievalAutoencoder, load_retrieval_autoencoder
from ae.train import LOSS_TERMS, AETrainConfig, plateaued, train_autoencoder
from utils.config import ConfigError, load_config
from utils.locks import hold_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "ae" / "configs"
EPOCHS = 4
# tiny model on toy frames [16, 8, 8]; 5 training videos x 4 chunks = 20 chunks -> 2 steps of 8 per epoch
TINY = [
    "spatial_h=8", "spatial_w=8", "hidden_dims=[8,16]", "latent_dim=16", "seq_len=8", "chunks_per_video=4",
    "batch_size=8", "lr=3e-3", f"epochs={EPOCHS}", "num_workers=0", "save_every=2", "log_every=1", "seed=5",
]


def script_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def toy_module():
    return script_module("make_toy_latents", ROOT / "toydatasets" / "make_toy_latents.py")


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    toy = toy_module()
    cfg = toy.ToyConfig(num_videos=6, frames=32, channels=16, height=8, width=8, min_segment=4, max_segment=8)
    return toy.write_toy_dataset(cfg, tmp_path_factory.mktemp("toy"), progress=False)


def tiny_config(data_dir: Path, output_dir: Path, *extra: str) -> AETrainConfig:
    return load_config(AETrainConfig, CONFIGS / "toy_delta.yaml", [f"data_dir={data_dir}", f"output_dir={output_dir}", *TINY, *extra])


class Interrupted(Exception):
    pass


def spy_datasets(monkeypatch, train_seed: int, reads: list, rng_at_epoch: dict, interrupt_at: int | None = None):
    """Record (dataset seed, video name, start frame) of every chunk read and the torch RNG state when each training
    epoch starts; optionally crash when training epoch `interrupt_at` starts."""
    get_item, set_epoch = LatentChunkDataset.__getitem__, LatentChunkDataset.set_epoch

    def spy_get_item(self, i):
        vid, start = self._plan[i]
        reads.append((self.seed, self.videos[vid].name, start))
        return get_item(self, i)

    def spy_set_epoch(self, epoch):
        if hasattr(self, "_plan") and self.seed == train_seed:  # the training loop, not a constructor
            if epoch == interrupt_at:
                raise Interrupted(f"simulated crash at the start of epoch {epoch}")
            rng_at_epoch[epoch] = torch.get_rng_state().clone()
        set_epoch(self, epoch)

    monkeypatch.setattr(LatentChunkDataset, "__getitem__", spy_get_item)
    monkeypatch.setattr(LatentChunkDataset, "set_epoch", spy_set_epoch)


@pytest.fixture(scope="module")
def reference(toy_dir, tmp_path_factory):
    """One uninterrupted single-process run of the tiny config, with its reads and RNG states."""
    out = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(toy_dir, out)
    reads, rng = [], {}
    with pytest.MonkeyPatch.context() as mp:
        spy_datasets(mp, cfg.seed, reads, rng)
        result = train_autoencoder(cfg)
    return {"cfg": cfg, "out": out, "result": result, "reads": reads, "rng": rng}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def toy_frames(toy_dir: Path) -> torch.Tensor:
    return torch.load(toy_dir / "latent_000000.pt", weights_only=True)  # [T, 16, 8, 8]


def test_training_decreases_the_loss_and_logs_consistent_terms(reference):
    history = reference["result"].history
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    first, last = history[0], history[-1]
    assert last["train"]["total"] < 0.95 * first["train"]["total"] and last["train"]["rec"] < first["train"]["rec"]
    assert min(h["val"]["total"] for h in history) < first["val"]["total"]
    for split in ("train", "val"):
        for h in history:
            terms = h[split]
            assert terms["total"] == pytest.approx(terms["rec"] + terms["seqdelta"] + terms["smooth"], rel=1e-5)


def test_validation_videos_are_never_trained_on(reference):
    cfg, reads = reference["cfg"], reference["reads"]
    split = load(reference["out"] / "last.pt")["data_split"]
    assert len(split["val"]) == 1 and len(split["train"]) == 5
    assert set(split["train"]).isdisjoint(split["val"])
    assert sorted(split["train"] + split["val"]) == [f"latent_{i:06d}.pt" for i in range(6)]
    trained = [name for seed, name, _ in reads if seed == cfg.seed]
    validated = [name for seed, name, _ in reads if seed == cfg.seed + 1]
    # every epoch: 2 full steps of 8 chunks (20 planned, drop_last), 4 validation chunks
    assert len(trained) == EPOCHS * 16 and len(validated) == EPOCHS * 4
    assert set(trained) <= set(split["train"]) and set(validated) == set(split["val"])
    assert len(set(trained)) == 5  # every training video is drawn from
    val_chunks = [(name, start) for seed, name, start in reads if seed == cfg.seed + 1]
    assert all(val_chunks[4 * e : 4 * e + 4] == val_chunks[:4] for e in range(EPOCHS))  # the same chunks every epoch
    train_chunks = [(name, start) for seed, name, start in reads if seed == cfg.seed]
    assert train_chunks[:16] != train_chunks[16:32]  # a new draw every epoch


def test_checkpoints_are_complete_atomic_and_loadable(reference, toy_dir):
    out, result = reference["out"], reference["result"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best.pt", "epoch_0001.pt", "epoch_0003.pt", "last.pt", "tb"]  # no temporary files left
    last, best = load(out / "last.pt"), load(out / "best.pt")
    assert last["epoch"] == EPOCHS - 1 and load(out / "epoch_0001.pt")["epoch"] == 1
    vals = [h["val"]["total"] for h in last["history"]]
    assert best["epoch"] == last["best_epoch"] == result.best_epoch == vals.index(min(vals))
    assert best["best_val"] == pytest.approx(min(vals))
    assert {"model", "config", "epoch", "optimizer", "scaler", "rng", "data_split", "history"} <= set(last)
    frames = toy_frames(toy_dir)
    model = load_retrieval_autoencoder(out / "last.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(frames), result.model.eval().encode(frames), rtol=0, atol=0)
    best_model = load_retrieval_autoencoder(out / "best.pt")
    for name, tensor in best_model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    assert best_model.cfg.hidden_dims == (8, 16) and best_model.cfg.latent_dim == 16


def test_a_crash_while_saving_keeps_the_previous_checkpoint(toy_dir, tmp_path, monkeypatch):
    cfg = tiny_config(toy_dir, tmp_path, "epochs=2")
    save = torch.save
    calls = []

    def crashing_save(obj, f, *args, **kwargs):
        calls.append(Path(f.name))
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            f.write(b"half a checkpoint")
            raise OSError("No space left on device")
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space left"):
        train_autoencoder(cfg)
    assert all(p.parent == tmp_path and p.name.startswith(".") for p in calls)  # written under temporary names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "tb"]
    assert load(tmp_path / "last.pt")["epoch"] == 0
    load_retrieval_autoencoder(tmp_path / "last.pt")


def test_resume_after_a_crash_equals_the_uninterrupted_run(reference, toy_dir, tmp_path, monkeypatch):
    cfg = tiny_config(toy_dir, tmp_path)
    rng = {}
    spy_datasets(monkeypatch, cfg.seed, [], rng, interrupt_at=2)
    with pytest.raises(Interrupted):
        train_autoencoder(cfg)
    assert load(tmp_path / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    spy_datasets(monkeypatch, cfg.seed, [], rng)
    resumed = train_autoencoder(cfg)

    ref = reference["result"]
    assert [h["epoch"] for h in resumed.history] == list(range(EPOCHS))
    for got, want in zip(resumed.history, ref.history):
        for split in ("train", "val"):
            assert got[split] == pytest.approx(want[split], rel=1e-6)
    for name, tensor in ref.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
    for epoch in (2, 3):  # the RNG continues where the interrupted run left it
        assert torch.equal(rng[epoch], reference["rng"][epoch])
    a, b = load(tmp_path / "last.pt")["optimizer"], load(reference["out"] / "last.pt")["optimizer"]
    for i, state in b["state"].items():
        assert int(a["state"][i]["step"]) == int(state["step"]) == EPOCHS * 2
        torch.testing.assert_close(a["state"][i]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    # TensorBoard: both runs' event files together hold every point once, as the uninterrupted run's
    assert len(list((tmp_path / "tb").iterdir())) == 2
    got, want = EventAccumulator(str(tmp_path / "tb")), EventAccumulator(str(reference["out"] / "tb"))
    got.Reload(), want.Reload()
    for tag in ("train/total", "train_epoch/total", "val/total"):
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in got.Scalars(tag)] == [(e.step, e.value) for e in want.Scalars(tag)]


def test_tensorboard_logs_every_loss_term_on_both_splits(reference):
    events = EventAccumulator(str(reference["out"] / "tb"))
    events.Reload()
    history = reference["result"].history
    steps_per_epoch = 2
    for term in LOSS_TERMS:
        assert [e.step for e in events.Scalars(f"train/{term}")] == list(range(1, EPOCHS * steps_per_epoch + 1))  # log_every=1
        for split, key in (("train_epoch", "train"), ("val", "val")):
            scalars = events.Scalars(f"{split}/{term}")
            assert [e.step for e in scalars] == [steps_per_epoch * (e + 1) for e in range(EPOCHS)]
            assert [e.value for e in scalars] == pytest.approx([h[key][term] for h in history], rel=1e-6)
    for name in ("mean_cosine", "const_to_var"):  # the collapse monitor, every epoch
        scalars = events.Scalars(f"embedding/{name}")
        assert [e.step for e in scalars] == [steps_per_epoch * (e + 1) for e in range(EPOCHS)]
        assert [e.value for e in scalars] == pytest.approx([h["embedding"][name] for h in history], rel=1e-6)


def test_plateau_is_judged_on_the_validation_reconstruction():
    history = [{"val": {"rec": r}} for r in (1.0, 0.8, 0.79, 0.785)]
    assert not plateaued(history, patience=0, min_delta=0.5)  # 0: never stop early
    assert plateaued(history, patience=2, min_delta=0.02)  # 0.785 is not 2 % below 0.8
    assert not plateaued(history, patience=2, min_delta=0.01)  # 0.785 is 1.9 % below 0.8
    assert not plateaued(history, patience=4, min_delta=0.02)  # not enough epochs yet


def test_training_stops_when_validation_rec_plateaus_and_a_resume_does_not_continue(toy_dir, tmp_path):
    cfg = tiny_config(toy_dir, tmp_path, "plateau_patience=1", "plateau_min_delta=0.99")
    assert [h["epoch"] for h in train_autoencoder(cfg).history] == [0, 1]  # epoch 1 is not 99 % better than epoch 0
    assert [h["epoch"] for h in train_autoencoder(cfg).history] == [0, 1]
    assert load(tmp_path / "last.pt")["epoch"] == 1


@pytest.mark.parametrize(
    "override, key",
    [
        ("bogus_key=1", "bogus_key"),
        ("batch_size=many", "batch_size"),
        ("lr=0", "lr"),
        ("grad_clip=-1", "grad_clip"),
        ("val_split=1.0", "val_split"),
        ("delta_margin=1.5", "delta_margin"),
        ("seq_len=0", "seq_len"),
        ("hidden_dims=[0,8]", "hidden_dims"),
        ("smooth_weight=-1", "smooth_weight"),
        ("plateau_patience=-1", "plateau_patience"),
    ],
)
def test_bad_config_keys_and_values_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key) as err:
        load_config(AETrainConfig, CONFIGS / "toy_delta.yaml", [override])
    assert "toy_delta.yaml" in str(err.value)


def test_shipped_configs_are_valid_and_the_paper_ones_use_table_4(tmp_path):
    full, base = load_config(AETrainConfig, CONFIGS / "ae_delta.yaml"), load_config(AETrainConfig, CONFIGS / "ae_only_paper.yaml")
    reference_ae_only = load_config(AETrainConfig, CONFIGS / "ae_only_reference.yaml")
    table4 = dict(lr=3e-4, weight_decay=1e-4, batch_size=128, epochs=400, grad_clip=1.0, rec_weight=1.0, delta_weight=1.0,
                  delta_window=3, delta_margin=0.85, smooth_weight=1.0, latent_dim=1024, hidden_dims=[64, 128, 256],
                  val_split=0.1, seq_len=8, in_channels=16, spatial_h=60, spatial_w=104, use_amp=True,
                  chunks_per_video=1, reference_init=True)  # the reference's epoch and initialisation
    assert {k: getattr(full, k) for k in table4} == {**table4, "hidden_dims": (64, 128, 256)}
    assert {k: getattr(base, k) for k in table4} == {**table4, "hidden_dims": (64, 128, 256), "delta_weight": 0.0, "smooth_weight": 0.0}
    assert {k: getattr(reference_ae_only, k) for k in table4} == {**table4, "hidden_dims": (64, 128, 256), "delta_weight": 0.0}
    toy_full, toy_base = load_config(AETrainConfig, CONFIGS / "toy_delta.yaml"), load_config(AETrainConfig, CONFIGS / "toy_base.yaml")
    differ = {f for f in AETrainConfig.__dataclass_fields__ if getattr(toy_full, f) != getattr(toy_base, f)}
    assert differ == {"delta_weight", "smooth_weight", "output_dir"}
    assert toy_base.delta_weight == toy_base.smooth_weight == 0.0 and toy_full.delta_weight > 0 and toy_full.smooth_weight > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "toy_delta.yaml").read_text() + "learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(AETrainConfig, bad)


def test_cli_reports_config_and_data_errors_by_name(toy_dir, tmp_path, capsys):
    cli = script_module("train_ae_delta", ROOT / "train_ae_delta.py")
    assert cli.main(["--config", str(CONFIGS / "toy_delta.yaml"), "epochz=3"]) == 2
    assert "epochz" in capsys.readouterr().err
    args = ["--config", str(CONFIGS / "toy_delta.yaml"), f"output_dir={tmp_path / 'run'}", *TINY]
    assert cli.main([*args, f"data_dir={tmp_path / 'nowhere'}"]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert cli.main([*args, f"data_dir={toy_dir}", "batch_size=64"]) == 2  # 20 training chunks per epoch
    err = capsys.readouterr().err
    assert "batch_size 64" in err and "chunks_per_video" in err
    assert not (tmp_path / "run").exists()


def test_cli_refuses_an_output_dir_in_use(toy_dir, tmp_path, capsys):
    cli = script_module("train_ae_delta", ROOT / "train_ae_delta.py")
    with hold_folder(tmp_path / "run", "output_dir"):
        args = ["--config", str(CONFIGS / "toy_delta.yaml"), f"output_dir={tmp_path / 'run'}", f"data_dir={toy_dir}", *TINY]
        assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"output_dir '{tmp_path / 'run'}' is in use by another run (pid {os.getpid()}" in err
    assert not list((tmp_path / "run").glob("*.pt"))


def test_corrupt_and_too_short_files_are_reported_by_name_and_skipped(toy_dir, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    (data / "latent_000097.pt").write_bytes(b"not a torch file")
    torch.save(torch.zeros(3, 16, 8, 8), data / "latent_000098.pt")  # shorter than one chunk of 8
    torch.save({"latents": torch.zeros(32, 16, 8, 8)}, data / "latent_000099.pt")
    with caplog.at_level("WARNING"):
        result = train_autoencoder(tiny_config(data, tmp_path / "run", "epochs=1"))
    for name in ("latent_000097.pt", "latent_000098.pt", "latent_000099.pt"):
        assert name in caplog.text
    assert "3 frames" in caplog.text
    split = load(tmp_path / "run" / "last.pt")["data_split"]
    assert sorted(split["train"] + split["val"]) == [f"latent_{i:06d}.pt" for i in range(6)]
    assert len(result.history) == 1


def test_resume_refuses_a_changed_video_split(reference, toy_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    shutil.copytree(reference["out"], tmp_path / "run", ignore=shutil.ignore_patterns("tb"))
    shutil.copy(data / "latent_000000.pt", data / "latent_000006.pt")
    with pytest.raises(ConfigError, match="latent_000006.pt"):
        train_autoencoder(tiny_config(data, tmp_path / "run", f"epochs={EPOCHS + 1}"))
    with pytest.raises(ConfigError, match="latent_dim"):
        train_autoencoder(tiny_config(toy_dir, tmp_path / "run", "latent_dim=8"))


WORKER = """
import sys, torch
from accelerate import PartialState
from ae.train import AETrainConfig, train_autoencoder
from utils.config import load_config

cfg = load_config(AETrainConfig, sys.argv[1], sys.argv[2:])
result = train_autoencoder(cfg)
state = PartialState()
torch.save({"model": result.model.state_dict(), "history": result.history, "world": state.num_processes},
           f"{cfg.output_dir}/rank{state.process_index}.pt")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def norm_cancelled_biases(model) -> set[str]:
    """Conv biases whose next layer is a GroupNorm with one channel per group (directly, or
    after a residual add): the norm removes them exactly, so their true gradient is 0 and Adam turns float
    rounding noise into steps of up to lr that change no output."""
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    names = set()
    for (name, module), (_, nxt) in zip(leaves, leaves[1:]):
        if isinstance(module, torch.nn.Conv2d) and isinstance(nxt, torch.nn.GroupNorm) and nxt.num_groups == nxt.num_channels:
            names.add(f"{name}.bias")
    return names


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(reference, toy_dir, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(worker), str(CONFIGS / "toy_delta.yaml"), f"data_dir={toy_dir}", f"output_dir={out}", *TINY]
    run = subprocess.run(cmd, cwd=tmp_path, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [load(out / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for name, tensor in ranks[0]["model"].items():  # DDP keeps the ranks bit-identical
        assert torch.equal(tensor, ranks[1]["model"][name]), name

    # Same global batch: the outputs agree to float rounding. Weights agree to 1e-4: the DDP gradient
    # (mean of two half-batch means) differs from the one-process gradient in the last bits, and Adam
    # divides by sqrt(v), which enlarges that difference on elements with tiny gradients.
    single = reference["result"].model.eval()
    skip = norm_cancelled_biases(single)
    assert "encoder.conv_stack.0.bias" in skip and "encoder.conv_stack.7.block.5.bias" in skip
    assert "encoder.conv_stack.3.block.5.bias" not in skip  # feeds the next stride-2 conv, not a norm
    for name, tensor in single.state_dict().items():
        if name not in skip:
            torch.testing.assert_close(ranks[0]["model"][name], tensor, rtol=0, atol=1e-4, msg=name)
    ddp = load_retrieval_autoencoder(out / "last.pt").eval()
    frames = toy_frames(toy_dir)
    with torch.no_grad():
        (rec_ddp, z_ddp), (rec_single, z_single) = ddp(frames), single(frames)
    torch.testing.assert_close(z_ddp, z_single, rtol=0, atol=1e-5)
    torch.testing.assert_close(rec_ddp, rec_single, rtol=0, atol=1e-5)
    for got, want in zip(ranks[0]["history"], reference["result"].history):
        for split in ("train", "val"):  # validation is gathered over both ranks: the same chunks, the same means
            assert got[split] == pytest.approx(want[split], rel=1e-5, abs=1e-5)


@pytest.mark.slow
def test_launcher_script_trains_the_toy_config_on_two_cpu_processes(toy_dir, tmp_path):
    help_text = subprocess.run(["bash", str(ROOT / "train_ae_delta.sh"), "--help"], capture_output=True, text=True, check=True).stdout
    assert "CONFIG=path" in help_text and "NPROC=n" in help_text
    env = {**launch_env(), "CONFIG": str(CONFIGS / "toy_base.yaml"), "NPROC": "2"}
    out = tmp_path / "run"
    cmd = ["bash", str(ROOT / "train_ae_delta.sh"), f"data_dir={toy_dir}", f"output_dir={out}", *TINY, "epochs=1"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training on 2 process(es) (MULTI_CPU" in run.stderr and "2 steps per epoch of 8 chunks (4 per process)" in run.stderr
    assert run.stdout.count("best val total") == 1 and str(out / "best.pt") in run.stdout  # printed by rank 0 only
    ckpt = load(out / "best.pt")
    assert ckpt["config"]["delta_weight"] == 0.0 and ckpt["config"]["smooth_weight"] == 0.0 and ckpt["config"]["epochs"] == 1
    assert ckpt["history"][0]["train"]["seqdelta"] == 0.0


def test_loaders_pin_batches_for_a_gpu_and_chunks_are_upcast_on_the_device(toy_dir):
    from ae.train import _build_loaders, chunk_loss_terms

    cfg = load_config(AETrainConfig, CONFIGS / "toy_delta.yaml", [f"data_dir={toy_dir}", *TINY])
    for pin in (True, False):
        train, val, _ = _build_loaders(cfg, 1, pin_memory=pin)
        assert train.pin_memory is pin and val.pin_memory is pin
    model = RetrievalAutoencoder(cfg.model_config())
    x = torch.randn(2, cfg.seq_len, 16, 8, 8)
    from_bf16 = chunk_loss_terms(model, x.bfloat16(), cfg.loss_config(), autocast=False)
    from_fp32 = chunk_loss_terms(model, x.bfloat16().float(), cfg.loss_config(), autocast=False)
    assert from_bf16["total"].dtype == torch.float32
    torch.testing.assert_close(from_bf16["total"], from_fp32["total"], rtol=0, atol=0)  # the same upcast, same code


def test_corrupt_last_checkpoint_points_to_resume_false_or_an_epoch_file(toy_dir, tmp_path, capsys):
    cli = script_module("train_ae_delta", ROOT / "train_ae_delta.py")
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"\x13\x37" * 2048)  # a killed copy or a disk error
    args = ["--config", str(CONFIGS / "toy_delta.yaml"), f"output_dir={out}", f"data_dir={toy_dir}", *TINY]
    assert cli.main(args) == 2  # before: UnpicklingError advising weights_only=False
    err = capsys.readouterr().err
    assert f"AE training checkpoint '{out / 'last.pt'}': file is corrupt or not a checkpoint" in err
    assert "resume=false" in err and "epoch_XXXX.pt" in err and "weights_only" not in err

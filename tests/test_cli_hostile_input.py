"""The hostile-input sweep of issue 18, run as a user would: each command in a subprocess. Every case
must end with one line on stderr naming the file/key/value, the documented exit status, no Python
traceback, nothing written outside its place and nothing good lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FAST = ["--size", "32", "--flow-method", "farneback", "--device", "cpu", "--workers", "1", "--no-progress"]


def mateffnet(*args, cwd=None, check_status=None, tmpdir=None):
    env = {**os.environ, "PYTHONWARNINGS": "default", **({"TMPDIR": str(tmpdir)} if tmpdir else {})}
    done = subprocess.run([sys.executable, "-m", "mateffnet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    if check_status is not None:
        assert done.returncode == check_status, (done.returncode, done.stdout, done.stderr)
    return done


def error_line(done) -> str:
    """The one error line of a failed command."""
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _video(path: Path, seed=0, frames=12):
    from mateffnet.data.synthetic import render_video, write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, render_video("slide_left", np.random.default_rng(seed), frames=frames, size=32))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """src/ with two tiny videos of two classes, a prepared store/ and an untrained model/ folder."""
    from mateffnet.io.annotations import folders
    from mateffnet.prepare.job import PrepareOptions, prepare_videos
    from mateffnet.models import StreamNet, TwoStreamNet

    root = tmp_path_factory.mktemp("world")
    _video(root / "src/c0/a.mp4", 0)
    _video(root / "src/c1/b.mp4", 1)
    prepare_videos(folders(root / "src").items(), root / "store",
                   PrepareOptions(size=32, flow_method="farneback", device="cpu", workers=0), progress=False)
    options = dict(backbone="resnet18", input_size=32, embed_dim=32, flow_length=2, num_segments=2,
                   class_names=["c0", "c1"], frame_size="32", flow_method="farneback")
    TwoStreamNet(StreamNet(2, **options), StreamNet(2, modality="flow", **options)).save_pretrained(root / "model")
    return root


# --------------------------------------------------------------------------------- 1. path safety


@pytest.mark.parametrize("entry", ["../outside/victim.mp4 1", "../../../../etc/passwd 0"])
def test_prepare_refuses_a_list_entry_outside_the_source_and_writes_nothing(tmp_path, entry):
    _video(tmp_path / "outside/victim.mp4")
    (tmp_path / "src").mkdir()
    (tmp_path / "list.txt").write_text(f"{entry}\n")
    before = _files(tmp_path)
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", "--annotations", tmp_path / "list.txt",
                     *FAST, check_status=2)
    assert f"list.txt:1: entry '{entry.split()[0]}' climbs out of the source folder" in error_line(done)
    assert _files(tmp_path) == before and not (tmp_path / "store").exists()


def test_prepare_packs_an_absolute_list_entry_inside_the_store(tmp_path):
    clip = _video(tmp_path / "elsewhere/clip.mp4")
    (tmp_path / "src").mkdir()
    (tmp_path / "list.txt").write_text(f"{clip} 0\n")
    mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", "--annotations", tmp_path / "list.txt", *FAST,
              check_status=0)
    assert (tmp_path / "store/clip.mfv").is_file()
    assert _files(tmp_path / "elsewhere") == {"clip.mp4"}


def test_prepare_refuses_an_hmdb51_entry_outside_the_source(tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/wave_test_split1.txt").write_text("../../escaped.avi 2\n")
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", "--format", "hmdb51",
                     "--annotations", tmp_path / "splits", *FAST, check_status=2)
    assert "wave_test_split1.txt:1: entry 'wave/../../escaped.avi' climbs out" in error_line(done)
    assert not (tmp_path / "store").exists()


def test_prepare_refuses_a_kinetics_youtube_id_with_a_path(tmp_path):
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,../evil,0,10,val\n")
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", "--annotations", tmp_path / "val.csv",
                     *FAST, check_status=2)
    assert "val.csv:2: youtube_id '../evil' is not a video id" in error_line(done)
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------------- 2.-4. annotations


def test_prepare_walks_a_folder_link_loop_once_with_a_warning(tmp_path):
    _video(tmp_path / "src/cls/v.mp4")
    (tmp_path / "src/cls/loop").symlink_to(".")
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", *FAST, check_status=0)
    assert "a folder link leads back to a folder already walked" in done.stderr
    assert sorted(p for p in _files(tmp_path / "store") if p.endswith(".mfv")) == ["cls/v.mfv"]


def test_prepare_refuses_two_videos_of_one_id(tmp_path):
    _video(tmp_path / "src/c/a.mp4")
    _video(tmp_path / "src/c/a.avi")
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", *FAST, check_status=2)
    assert "two videos would share the packed file c/a" in error_line(done)


def test_prepare_packs_gifs_in_class_folders(tmp_path):
    from PIL import Image

    (tmp_path / "src/c").mkdir(parents=True)
    frames = [Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)) for i in range(6)]
    frames[0].save(tmp_path / "src/c/g.gif", save_all=True, append_images=frames[1:], duration=100)
    mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", *FAST, check_status=0)
    assert (tmp_path / "store/c/g.mfv").is_file()


@pytest.mark.parametrize("text, message", [("a.mp4 x\n", "label 'x' of 'a.mp4' is not a whole number"),
                                           ("", "empty annotation file")])
def test_prepare_refuses_poor_list_files(tmp_path, text, message):
    (tmp_path / "src").mkdir()
    (tmp_path / "list.txt").write_text(text)
    done = mateffnet("prepare", tmp_path / "src", "--out", tmp_path / "store", "--annotations", tmp_path / "list.txt",
                     *FAST, check_status=2)
    assert message in error_line(done)


# --------------------------------------------------------------------------- 5. output folders


@pytest.mark.parametrize("command", ["train", "evaluate", "explain", "export"])
def test_an_out_that_names_an_existing_file_is_one_line(world, tmp_path, command):
    target = tmp_path / "taken"
    target.write_text("keep me")
    args = {
        "train": ["train", "--out", target, "--set", "train.device=cpu"],
        "evaluate": ["evaluate", "--model", world / "model", "--data", world / "store", "--videos", world / "src",
                     "--out", target, "--device", "cpu"],
        "explain": ["explain", world / "src/c0/a.mp4", "--model", world / "model", "--out", target, "--device", "cpu"],
        "export": ["export", "--model", world / "model", "--out", target, "--no-verify"],
    }[command]
    done = mateffnet(*args, check_status=2)
    assert f"--out {target}: exists and is not a folder (EEXIST)" in error_line(done)
    assert target.read_text() == "keep me"


# ---------------------------------------------------------------------- 6. damaged packed files


@pytest.mark.parametrize("how", ["jpeg", "footer"])
def test_evaluate_on_a_damaged_packed_file_names_it_and_reports_no_number(world, tmp_path, how):
    import shutil

    from mateffnet.io.store import PackedVideo

    store = Path(shutil.copytree(world / "store", tmp_path / "store"))
    path = store / "c1/b.mfv"
    data = bytearray(path.read_bytes())
    if how == "footer":
        data[-40:] = bytes(40)
    else:
        for offset, length in PackedVideo(path)._index.tolist():
            data[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    scratch = tmp_path / "tmp"  # its own temporary folder: tests running beside it leave theirs in /tmp
    scratch.mkdir()
    done = mateffnet("evaluate", "--model", world / "model", "--data", store, "--videos", world / "src", "--out",
                     tmp_path / "eval", "--device", "cpu", "--workers", "1", "--segments", "2", "--crops", "1",
                     "--no-progress", check_status=2, tmpdir=scratch)
    line = error_line(done)
    assert f"{path}: bad packed video file" in line and "(video c1/b)" in line and "--verify" in line
    assert "Corrupt JPEG" not in done.stderr and "top-1" not in done.stdout
    assert not (tmp_path / "eval/metrics.json").exists()
    assert not list(scratch.glob("pymp-*"))  # the loader's workers were shut down, their folders removed


# ------------------------------------------------------------------------------ 7. config values


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr must be > 0, got -1.0"),
    ("data.workers=-2", "data.workers must be >= 0, got -2"),
    ("train.max_steps_per_epoch=0", "train.max_steps_per_epoch must be a positive integer, got 0"),
    ("model.input_size=0", "model.input_size must be >= 32 and <= 1024, got 0"),
    ("model.input_size=100000", "model.input_size must be >= 32 and <= 1024, got 100000"),
    ("train.momentum=2", "train.momentum must be >= 0 and < 1, got 2.0"),
    ("train.warmup_epochs=-1", "train.warmup_epochs must be >= 0, got -1.0"),
    ("train.val_every=-1", "train.val_every must be >= 0, got -1"),
])
def test_train_dry_run_refuses_values_out_of_range(tmp_path, override, message):
    done = mateffnet("train", "--dry-run", "--out", tmp_path / "run", "--set", override, check_status=2)
    assert message in error_line(done)
    assert not (tmp_path / "run").exists()


def test_train_dry_run_reads_1e_minus_3_as_a_number(world, tmp_path):
    done = mateffnet("train", "--dry-run", "--out", tmp_path / "run", "--set", "train.lr=1e-3", "--set",
                     f"data.videos={world / 'src'}", "--set", f"data.store={world / 'store'}", check_status=0)
    assert "SGD lr 0.001 " in done.stdout


def test_train_refuses_a_config_with_a_section_twice(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  lr: 0.1\ntrain:\n  epochs: 3\n")
    done = mateffnet("train", "--dry-run", "--config", tmp_path / "run.yaml", check_status=2)
    assert "run.yaml:3: key 'train' appears twice" in error_line(done)


# --------------------------------------------------------------------------- 9. model folders


def test_predict_refuses_a_pickle_posing_as_safetensors_in_one_line(world, tmp_path):
    import pickle
    import shutil

    model = Path(shutil.copytree(world / "model", tmp_path / "model"))
    (model / "rgb/model.safetensors").write_bytes(pickle.dumps({"a": [1, 2]}))
    done = mateffnet("predict", world / "src/c0/a.mp4", "--model", model, "--device", "cpu", check_status=2)
    assert f"{model / 'rgb/model.safetensors'}: not a readable safetensors file" in error_line(done)


def test_predict_refuses_a_malformed_fusion_file(world, tmp_path):
    import shutil

    model = Path(shutil.copytree(world / "model", tmp_path / "model"))
    (model / "fusion.json").write_text("{")
    done = mateffnet("predict", world / "src/c0/a.mp4", "--model", model, "--device", "cpu", check_status=2)
    assert f"{model / 'fusion.json'}: malformed fusion file" in error_line(done)


# -------------------------------------------------------------------------- 10. arguments


@pytest.mark.parametrize("args, message", [
    (["predict", "{video}", "--segments", "0"], "--segments must be at least 1, got 0"),
    (["predict", "{video}", "--topk", "-1"], "--topk must be at least 1, got -1"),
    (["evaluate", "--data", "{store}", "--segments", "0", "--out", "{tmp}/eval"], "--segments must be at least 1, got 0"),
    (["explain", "{video}", "--topk", "0", "--out", "{tmp}/x"], "--topk must be at least 1, got 0"),
])
def test_unchecked_arguments_are_refused_before_any_work(world, tmp_path, args, message):
    args = [a.format(video=world / "src/c0/a.mp4", store=world / "store", tmp=tmp_path) for a in args]
    done = mateffnet(*args, "--model", world / "model", "--device", "cpu", check_status=2)
    assert message in error_line(done)
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_a_packed_file_and_still_reports_the_videos(world):
    done = mateffnet("predict", world / "store/c0/a.mfv", world / "src/c1/b.mp4", "--model", world / "model",
                     "--device", "cpu", "--segments", "2", check_status=1)
    assert "a.mfv: a packed file of a prepared store, not a video; score stores with mateffnet evaluate" in error_line(done)
    assert "b.mp4" in done.stdout and "fused" in done.stdout


def test_evaluate_can_skip_damaged_files_and_says_so_beside_the_numbers(world, tmp_path):
    import json
    import shutil

    from mateffnet.io.store import PackedVideo

    store = Path(shutil.copytree(world / "store", tmp_path / "store"))
    path = store / "c1/b.mfv"
    data = bytearray(path.read_bytes())
    for offset, length in PackedVideo(path)._index.tolist():
        data[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    done = mateffnet("evaluate", "--model", world / "model", "--data", store, "--videos", world / "src", "--out",
                     tmp_path / "eval", "--device", "cpu", "--workers", "1", "--segments", "2", "--crops", "1",
                     "--no-progress", "--damaged", "skip", check_status=0)
    assert "(1 videos;" in done.stdout
    assert "NOTE: these numbers leave out 1 video(s) whose packed files are damaged: c1/b" in done.stdout
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["videos"] == 1 and metrics["damaged_videos"] == ["c1/b"]

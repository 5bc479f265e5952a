"""A folder of tiny fake videos named like each motion-centric dataset prepares and trains for one step."""

import json

import numpy as np
import pytest

from mateffnet.cli import main

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs"


def frames(seed: int, count: int = 8) -> np.ndarray:
    """A noisy background with a bright square moving right: (count, 48, 64, 3) uint8."""
    rng = np.random.default_rng(seed)
    background = rng.integers(30, 120, size=(48, 64, 3), dtype=np.uint8)
    clip = np.repeat(background[None], count, axis=0)
    for t in range(count):
        clip[t, 12:28, 4 + 3 * t:20 + 3 * t] = (220, 190, 60)
    return clip


def write_video(path, clip, codec):
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        for image in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sthv2_dataset(root):
    ann = root / "annotations"
    ann.mkdir(parents=True)
    templates = ["Pushing something from left to right", "Pushing something from right to left"]
    (ann / "something-something-v2-labels.json").write_text(json.dumps({t: str(i) for i, t in enumerate(templates)}))
    for split, ids in (("train", range(100, 104)), ("validation", range(200, 202))):
        entries = [{"id": str(i), "label": "pushing a pen", "template": templates[i % 2].replace("something", "[something]"),
                    "placeholders": ["a pen"]} for i in ids]
        (ann / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
        for i in ids:
            write_video(root / "videos" / f"{i}.webm", frames(i), "libvpx")
    (root / "videos" / "100.webm").rename(root / "videos" / "gone.webm")  # listed but missing: reported, left out
    return ann, 3  # training videos that exist


def kinetics_dataset(root, classes):
    ann = root / "annotations"
    ann.mkdir(parents=True)
    names = [f"class {i:03d}" for i in range(classes)]
    (ann / f"label_map_{classes}.txt").write_text("\n".join(names) + "\n")
    for split, ids in (("train", range(4)), ("val", range(4, 6))):
        rows = [f"{names[i % 2]},vid{i:08d},{i},{i + 10},{split}" for i in ids]
        (ann / f"{split}.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(rows) + "\n")
        for i in ids:
            write_video(root / "videos" / names[i % 2].replace(" ", "_") / f"vid{i:08d}_{i:06d}_{i + 10:06d}.mp4",
                        frames(i), "mpeg4")
    return ann, 4


def diving48_dataset(root):
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "05Twis", "FREE"],
                                                          ["Forward", "25som", "NoTwis", "PIKE"]]))
    for split, ids in (("train", range(4)), ("test", range(4, 6))):
        entries = [{"vid_name": f"abcdefghijk_{i:05d}", "label": i % 2, "start_frame": 0, "end_frame": 7} for i in ids]
        (ann / f"Diving48_V2_{split}.json").write_text(json.dumps(entries))
        for i in ids:
            write_video(root / "videos" / "rgb" / f"abcdefghijk_{i:05d}.mp4", frames(i), "mpeg4")
    return ann, 4


DATASETS = {
    "sthv2": sthv2_dataset,
    "kinetics600": lambda root: kinetics_dataset(root, 600),
    "kinetics700": lambda root: kinetics_dataset(root, 700),
    "diving48": diving48_dataset,
}
TINY = ["model.backbone=resnet18", "model.pretrained=null", "model.input_size=32", "model.num_segments=2",
        "model.flow_length=2", "model.embed_dim=32", "train.epochs=1", "train.batch_size=2",
        "train.max_steps_per_epoch=1", "train.device=cpu", "data.workers=0", "data.val_segments=2", "train.val_every=0"]


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_fake_videos_named_like_the_dataset_prepare_and_train_one_step(tmp_path, dataset, capsys):
    root = tmp_path / dataset
    annotations, present = DATASETS[dataset](root)
    store = root / "store"
    assert main(["prepare", str(root / "videos"), "--out", str(store), "--annotations", str(annotations),
                 "--flow-method", "farneback", "--size", "32", "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr()
    if dataset == "sthv2":
        assert "6 listed, 1 missing" in printed.out and "missing: 100.webm" in printed.out
    assert len(list(store.rglob("*.mfv"))) == present + 2
    config = CONFIGS / dataset / f"{dataset}_flow_efficientnet_b0_sinpe.yaml"
    overrides = [f"data.root={tmp_path}", *TINY]
    args = ["train", "--config", str(config), *(item for o in overrides for item in ("--set", o))]
    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"{present} prepared" in plan and "temporal encoding sinusoidal" in plan and f"data       {dataset}" in plan
    run = tmp_path / "run"
    assert main([*args, "--out", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "last" / "config.json").read_text())
    assert saved["temporal_encoding"] == "sinusoidal" and saved["num_classes"] == {"sthv2": 2, "kinetics600": 600,
                                                                                   "kinetics700": 700, "diving48": 2}[dataset]

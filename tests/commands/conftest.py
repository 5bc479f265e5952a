"""A small two-stream model that tells four synthetic classes apart, trained in seconds, and long videos of them.

The model is MAT-EffNet's stream network (timm's tiny test_efficientnet backbone at 32 px, 4 segments, flow stacks of 2 Farneback
fields) trained on views made by `inference.stream_views`, the path timeline, watch and features score with.
Of its four classes RGB alone can only tell the two balls apart (colour) and flow alone only the two slides
(direction of motion), as in the demo: fusion is needed to recover every class.
"""

import contextlib

import numpy as np
import pytest
import torch

from mateffnet.data.synthetic import CLASS_NAMES, render_video, video_rng, write_video
from mateffnet.inference import stream_views
from mateffnet.models import StreamNet, TwoStreamNet

CLASSES = ["ball_blue", "ball_red", "slide_left", "slide_right"]
FPS = 8
SIZE = 64
WINDOW_FRAMES = 16  # 2 s at 8 fps
SEQUENCE = ["ball_red", "slide_left", "ball_blue", "slide_right", "ball_red", "slide_right", "ball_blue", "slide_left"]
SECONDS_PER_ACTION = 4


def make_stream(modality: str) -> StreamNet:
    return StreamNet(len(CLASSES), modality=modality, backbone="test_efficientnet", input_size=32, num_segments=4,
                     flow_length=2, frame_size=str(SIZE), flow_method="farneback", flow_params={},
                     class_names=CLASSES, dropout=0.0)


def clip_of(name: str, index: int, frames: int = WINDOW_FRAMES) -> np.ndarray:
    return render_video(name, video_rng(7, CLASS_NAMES.index(name), index), frames, SIZE)


def train_stream(stream: StreamNet, clips: list[np.ndarray], labels: torch.Tensor, steps: int = 150) -> StreamNet:
    views = torch.stack([stream_views(clip, stream, 4, 1, torch.device("cpu"))[0] for clip in clips])
    optimizer = torch.optim.Adam(stream.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    stream.train()
    for _ in range(steps):
        batch = torch.randint(len(views), (16,), generator=generator)
        loss = torch.nn.functional.cross_entropy(stream(views[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return stream.eval()


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory):
    """A trained two-stream model folder (rgb/, flow/, fusion.json) of the four CLASSES."""
    with one_thread():
        return _train_model(tmp_path_factory.mktemp("model"))


@contextlib.contextmanager
def one_thread():
    """Tiny convolutions run several times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_model(folder):
    torch.manual_seed(0)
    clips, labels = [], []
    for label, name in enumerate(CLASSES):
        for index in range(32):
            clips.append(clip_of(name, index))
            labels.append(label)
    labels = torch.tensor(labels)
    model = TwoStreamNet(train_stream(make_stream("rgb"), clips, labels), train_stream(make_stream("flow"), clips, labels))
    return model.save_pretrained(folder)


def long_video(path, sequence=SEQUENCE, seconds=SECONDS_PER_ACTION):
    """A video of `sequence`'s classes, `seconds` each, rendered from unseen random streams; returns its path."""
    parts = [clip_of(name, 100 + i, seconds * FPS) for i, name in enumerate(sequence)]
    return write_video(path, np.concatenate(parts), fps=FPS)


@pytest.fixture(scope="session")
def long_synthetic_video(tmp_path_factory):
    return long_video(tmp_path_factory.mktemp("long") / "long.mp4")

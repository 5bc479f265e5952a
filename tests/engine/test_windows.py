import weakref

import numpy as np
import pytest
import torch

from mateffnet.data.synthetic import CLASS_NAMES, render_video, video_rng
from mateffnet.engine.windows import FrameRing, Window, WindowScorer, score_frames, window_batches
from mateffnet.engine.inference import clip_positions, predict_video
from mateffnet.models import StreamNet, TwoStreamNet


def stream(modality):
    torch.manual_seed(0)
    return StreamNet(3, modality=modality, backbone="test_efficientnet", input_size=32, num_segments=3, flow_length=2,
                     frame_size="48", flow_method="farneback", flow_params={}).eval()


@pytest.fixture(scope="module")
def model():
    return TwoStreamNet(stream("rgb"), stream("flow"))


@pytest.fixture(scope="module")
def video():
    return render_video("slide_left", video_rng(0, CLASS_NAMES.index("slide_left"), 0), 60, 48)


def test_windows_cover_the_stream_at_the_stride_and_a_short_stream_is_one_window():
    starts = [w.start for batch, _ in window_batches(({"s": i} for i in range(20)), 8, 3, batch=2) for w in batch]
    assert starts == [0, 3, 6, 9, 12]  # the last window ends at frame 19, the stream's last
    (batch, ring), = window_batches(({"s": i} for i in range(5)), 8, 3)
    assert batch == [Window(0, 5)] and ring.take(np.array([0, 4]), "s").tolist() == [0, 4]


@pytest.mark.parametrize("batch", [1, 3])
def test_the_decoder_never_holds_more_than_the_frames_of_one_batch_of_windows(model, video, batch):
    length, stride = 12, 4
    alive, most = [], []

    def frames():  # a "decoder" that notes how many of the frames it produced are still referenced
        for image in video:
            frame = image.copy()
            alive.append(weakref.ref(frame))
            most.append(sum(ref() is not None for ref in alive))
            yield {"48": frame}

    scorer = WindowScorer(model, segments=3)
    windows = sum(len(w) for w, _, _ in score_frames(frames(), scorer, length, stride, batch))
    assert windows == (len(video) - length) // stride + 1
    assert max(most) <= length + (batch - 1) * stride + 1  # the ring, and the frame being handed over
    assert max(most) < len(video) // 2


def test_the_video_decoder_is_read_as_a_stream_not_loaded_whole(model, video, tmp_path):
    from mateffnet.data.synthetic import write_video
    from mateffnet.engine.windows import decoded_frames

    path = write_video(tmp_path / "clip.mp4", video)
    alive, most = [], []

    def tracked(frames):
        for item in frames:
            alive.append(weakref.ref(item["48"]))
            most.append(sum(ref() is not None for ref in alive))
            yield item

    scorer = WindowScorer(model, segments=3)
    with decoded_frames(path, scorer.sizes) as (_, frames):
        batches = sum(1 for _ in score_frames(tracked(frames), scorer, 12, 4, batch=2))
    assert batches == 7 and len(alive) == len(video)  # 13 windows, 2 a batch
    assert max(most) <= 12 + 4 + 1


def test_overlapping_windows_compute_each_flow_field_once(model, video):
    scorer = WindowScorer(model, segments=3)
    batches = list(score_frames(({"48": f} for f in video), scorer, 12, 2, batch=4))
    needed = set()
    for windows, _, _ in batches:
        for w in windows:
            needed.update((clip_positions(model.flow, w.length, 3) + w.start).flatten().tolist())
    count = sum(len(w) for w, _, _ in batches)
    assert scorer.flows_computed == len(needed) < count * 3 * 2


def test_a_window_scores_what_predict_scores_for_a_video_of_its_frames(model, video):
    scorer = WindowScorer(model, segments=3)
    ring = FrameRing(60)
    for frame in video:
        ring.push({"48": frame})
    scores = scorer.score([Window(8, 20), Window(30, 20)], ring)
    for row, start in enumerate((8, 30)):
        alone = predict_video(model, {"48": video[start:start + 20]}, segments=3)
        for name in ("rgb", "flow", "fused"):
            np.testing.assert_allclose(scores.probabilities[name][row], alone[name], rtol=1e-4, atol=1e-6)

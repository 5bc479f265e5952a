import threading
import time
import weakref

import numpy as np
import pytest
import torch

from mateffnet.data.synthetic import CLASS_NAMES, render_video, video_rng
from mateffnet.engine.windows import (FrameRing, Window, WindowScorer, decoded_frames, frames_ahead, score_frames,
                                      window_batches)
from mateffnet.errors import MateffnetError
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


def test_the_video_decoder_runs_ahead_in_its_own_thread_and_holds_no_more_than_the_ring_and_its_queue(
        model, video, tmp_path, monkeypatch):
    from mateffnet.data.synthetic import write_video
    from mateffnet.io.decode import VideoReader

    path = write_video(tmp_path / "clip.mp4", video)
    alive, most, threads = [], [], set()
    decode = VideoReader.frames

    def tracked(self, max_frames=None):  # the real decoder, noting what it produced that is still referenced
        for image in decode(self, max_frames):
            threads.add(threading.current_thread().name)
            alive.append(weakref.ref(image))
            most.append(sum(ref() is not None for ref in alive))
            yield image

    monkeypatch.setattr(VideoReader, "frames", tracked)
    scorer, depth = WindowScorer(model, segments=3), 8
    with decoded_frames(path, scorer.sizes) as (_, decoded), frames_ahead(decoded, depth) as frames:
        batches = sum(1 for _ in score_frames(frames, scorer, 12, 4, batch=2))
    assert batches == 7 and len(alive) == len(video)  # 13 windows, 2 a batch
    assert threading.current_thread().name not in threads
    assert max(most) <= (12 + 4) + depth + 2  # the ring, the queue, one being queued and one being handed over
    assert max(most) < len(video) // 2


def test_frames_decoded_ahead_arrive_in_order_and_a_decoder_error_is_raised_where_it_occurred():
    def decoder():
        yield from range(5)
        raise MateffnetError("clip.mp4: truncated: 5 of 9 declared frames decode")

    seen = []
    with pytest.raises(MateffnetError, match="truncated"), frames_ahead(decoder(), 2) as frames:
        for item in frames:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_leaving_early_stops_the_thread_that_decodes_ahead():
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    with frames_ahead(endless(), 3) as frames:
        assert [next(frames) for _ in range(4)] == [0, 1, 2, 3]
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count <= 4 + 3 + 1
    assert not [t for t in threading.enumerate() if t.name == "mateffnet-decode"]


def test_each_batch_scored_while_the_next_is_queued_gets_its_own_windows_scores(model, video):
    scorer = WindowScorer(model, segments=3)
    batches = list(score_frames(({"48": f} for f in video), scorer, 20, 8, batch=2))
    assert [[w.start for w in windows] for windows, _, _ in batches] == [[0, 8], [16, 24], [32, 40]]
    for windows, scores, _ in batches:
        for row, window in enumerate(windows):
            alone = predict_video(model, {"48": video[window.start:window.end]}, segments=3)
            for name in ("rgb", "flow", "fused"):
                np.testing.assert_allclose(scores.probabilities[name][row], alone[name], rtol=1e-4, atol=1e-6)


def test_what_keep_takes_is_handed_out_with_its_batch_after_the_ring_has_moved_on(model, video):
    scorer = WindowScorer(model, segments=3)

    def first_frame(windows, ring):
        return [ring.take(np.array([w.start]), "48")[0] for w in windows]

    for windows, _, kept in score_frames(({"48": f} for f in video), scorer, 20, 8, batch=2, keep=first_frame):
        assert all(np.array_equal(frame, video[w.start]) for frame, w in zip(kept, windows))


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
    scores = scorer.score([Window(8, 20), Window(30, 24)], ring)  # windows of different lengths too
    for row, (start, length) in enumerate(((8, 20), (30, 24))):
        alone = predict_video(model, {"48": video[start:start + length]}, segments=3)
        for name in ("rgb", "flow", "fused"):
            np.testing.assert_allclose(scores.probabilities[name][row], alone[name], rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the queued, pinned-memory path)")
def test_on_cuda_the_queued_batches_score_what_predict_scores_on_cuda(model, video):
    device = torch.device("cuda")
    on_gpu = TwoStreamNet(stream("rgb"), stream("flow")).to(device)
    scorer = WindowScorer(on_gpu, segments=3, device=device)
    batches = list(score_frames(({"48": f} for f in video), scorer, 20, 8, batch=2))
    assert sum(len(windows) for windows, _, _ in batches) == 6
    for windows, scores, _ in batches:
        for row, window in enumerate(windows):
            alone = predict_video(on_gpu, {"48": video[window.start:window.end]}, segments=3, device=device)
            for name in ("rgb", "flow", "fused"):  # bf16 on the GPU: batches of different sizes round differently
                np.testing.assert_allclose(scores.probabilities[name][row], alone[name], atol=2e-2)

import json

import numpy as np
import pytest
import torch

from mateffnet.data.sampling import flow_indices, rgb_indices
from mateffnet.data.synthetic import (
    ALL_CLASSES,
    CLASS_NAMES,
    ORDER_TEST_SEGMENTS,
    SYNTHETIC_CLASSES,
    make_synthetic_dataset,
    read_video_frames,
    render_video,
    video_rng,
)
from mateffnet.errors import MateffnetError


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two 10-frame 64×64 videos per class, written once for the tests that only read them."""
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(root, videos_per_class=2, frames=10, size=64, seed=7, progress=False)


def read_list(path):
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


def label_of(name):
    return CLASS_NAMES.index(name)


def test_layout_lists_and_labels(small_dataset):
    root = small_dataset.root
    assert (root / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)  # folder-per-class readers sort: same labels
    train, test = read_list(small_dataset.train_list), read_list(small_dataset.test_list)
    assert len(train) == len(test) == len(CLASS_NAMES)  # 2 videos per class: 1 train, 1 test
    for relative, label in train + test:
        folder, file = relative.split("/")
        assert folder == CLASS_NAMES[label] and file.startswith(folder + "_") and file.endswith(".mp4")
        assert (root / relative).is_file()
    assert not set(train) & set(test)
    assert small_dataset.written == 18 and small_dataset.kept == 0
    assert {c.group for c in SYNTHETIC_CLASSES} == {"motion", "appearance"}


def test_every_listed_video_decodes_to_the_requested_frames(small_dataset):
    for relative, _ in read_list(small_dataset.train_list) + read_list(small_dataset.test_list):
        frames = read_video_frames(small_dataset.root / relative)
        assert frames.shape == (10, 64, 64, 3) and frames.dtype == np.uint8
        assert frames.std() > 10  # a real picture, not a flat frame


def test_encoded_frames_stay_close_to_the_rendered_ones(small_dataset):
    relative, label = read_list(small_dataset.train_list)[0]
    rendered = render_video(CLASS_NAMES[label], video_rng(7, label, 0), 10, 64).astype(np.float64)
    decoded = read_video_frames(small_dataset.root / relative).astype(np.float64)
    assert np.abs(decoded - rendered).mean() < 6  # H.264 at CRF 12 (4:2:0 chroma) keeps the picture


def test_videos_are_written_and_read_back_under_pyav19s_open(tmp_path, pyav19_open):
    dataset = make_synthetic_dataset(tmp_path, videos_per_class=2, frames=6, size=48, seed=1, progress=False)
    video = dataset.root / f"{CLASS_NAMES[0]}/{CLASS_NAMES[0]}_000.mp4"
    assert read_video_frames(video).shape == (6, 48, 48, 3)


def test_same_seed_same_frames_other_seed_other_frames(tmp_path, small_dataset):
    again = make_synthetic_dataset(tmp_path / "again", videos_per_class=2, frames=10, size=64, seed=7, progress=False)
    other = make_synthetic_dataset(tmp_path / "other", videos_per_class=2, frames=10, size=64, seed=8, progress=False)
    videos = sorted(p.relative_to(small_dataset.root) for p in small_dataset.root.rglob("*.mp4"))
    assert len(videos) == 18
    for relative in videos:  # the same seed gives the same files, byte for byte (the encoder is deterministic)
        assert (again.root / relative).read_bytes() == (small_dataset.root / relative).read_bytes(), relative
    for relative in ("spin_cw/spin_cw_000.mp4", "ball_red/ball_red_001.mp4"):
        first = read_video_frames(small_dataset.root / relative)
        assert np.abs(read_video_frames(other.root / relative).astype(int) - first).mean() > 5


def test_rerun_keeps_finished_videos_and_redoes_missing_ones(tmp_path):
    options = dict(videos_per_class=2, frames=4, size=48, seed=1, progress=False)
    first = make_synthetic_dataset(tmp_path / "d", **options)
    missing = tmp_path / "d" / "slide_left" / "slide_left_001.mp4"
    before = read_video_frames(missing)
    missing.unlink()
    (tmp_path / "d" / "spin_cw" / "spin_cw_000.mp4").write_bytes(b"")  # a damaged file is redone too
    second = make_synthetic_dataset(tmp_path / "d", **options)
    assert (first.written, second.written, second.kept) == (18, 2, 16)
    np.testing.assert_array_equal(read_video_frames(missing), before)
    assert read_video_frames(tmp_path / "d" / "spin_cw" / "spin_cw_000.mp4").shape == (4, 48, 48, 3)


def test_a_folder_with_other_settings_or_other_content_is_refused(tmp_path):
    make_synthetic_dataset(tmp_path / "d", videos_per_class=2, frames=4, size=48, seed=1, progress=False)
    with pytest.raises(MateffnetError, match=r"other settings \(seed 1 → 2\)"):
        make_synthetic_dataset(tmp_path / "d", videos_per_class=2, frames=4, size=48, seed=2, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MateffnetError, match="exists and is not empty"):
        make_synthetic_dataset(tmp_path / "mine", videos_per_class=2, frames=4, size=48, progress=False)


@pytest.mark.parametrize(
    "options, message",
    [({"size": 63}, "size must be even"), ({"size": 32}, "size must be an integer ≥ 48"),
     ({"frames": 1}, "frames must be an integer ≥ 2"),
     ({"videos_per_class": 1}, "videos_per_class must be an integer ≥ 2"),
     ({"test_fraction": 1.0}, "test_fraction must be between 0 and 1"), ({"codec": "vp9"}, "codec must be")],
)
def test_bad_settings_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(MateffnetError, match=message):
        make_synthetic_dataset(tmp_path / "d", progress=False, **options)


def test_render_is_deterministic_and_checks_the_class():
    a = render_video("rings_expand", video_rng(3, 4, 5), 6, 48)
    b = render_video("rings_expand", video_rng(3, 4, 5), 6, 48)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 48, 48, 3)
    with pytest.raises(MateffnetError, match="unknown synthetic class 'jump'"):
        render_video("jump", video_rng(0, 0, 0))


# ---- the properties the two streams rely on ------------------------------------------------------------

def mean_motion(frames):
    """Farneback flow between consecutive decoded frames → (mean vx, mean vy, mean radial, mean curl) of the
    moving pixels; radial/curl are measured around the centroid of the moving pixels (y points down, so a
    positive curl is clockwise on screen)."""
    pytest.importorskip("cv2", reason="measures the motion with OpenCV's Farneback (mateffnet[opencv])")
    from mateffnet.flow import compute_flow

    gray = torch.from_numpy(frames).float().mean(-1)
    flow = compute_flow(gray[:-1], gray[1:], method="farneback").numpy()  # (N-1, 2, H, W)
    vx, vy = flow[:, 0], flow[:, 1]
    moving = np.hypot(vx, vy) > 0.5
    ys, xs = np.nonzero(moving.any(0))
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    grid_y, grid_x = np.mgrid[0:frames.shape[1], 0:frames.shape[2]] + 0.5
    rx, ry = grid_x - cx, grid_y - cy
    radial = (rx * vx + ry * vy) / np.maximum(np.hypot(rx, ry), 1.0)
    curl = (rx * vy - ry * vx) / np.maximum(np.hypot(rx, ry), 1.0)
    return {name: float(value[moving].mean()) for name, value in
            (("vx", vx), ("vy", vy), ("radial", radial), ("curl", curl), ("abs_vx", np.abs(vx)), ("abs_vy", np.abs(vy)))}


def test_motion_classes_move_as_named_in_the_decoded_videos(small_dataset):
    for index in range(2):
        motion = {name: mean_motion(read_video_frames(small_dataset.root / name / f"{name}_{index:03d}.mp4"))
                  for name in CLASS_NAMES}
        assert motion["slide_left"]["vx"] < -0.5 < 0.5 < motion["slide_right"]["vx"]
        assert motion["rings_contract"]["radial"] < -0.2 < 0.2 < motion["rings_expand"]["radial"]
        assert motion["spin_ccw"]["curl"] < -0.2 < 0.2 < motion["spin_cw"]["curl"]
        for ball in ("ball_red", "ball_green", "ball_blue"):
            assert motion[ball]["abs_vy"] > 2 * motion[ball]["abs_vx"]  # bobbing up and down


def ks_distance(a, b):
    """Two-sample Kolmogorov–Smirnov statistic."""
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return np.abs(cdf_a - cdf_b).max()


def frame_statistics(frame):
    """Appearance statistics of one frame: where the coloured object is (chroma-weighted centre of mass, the
    backgrounds being dull) and its colour (mean Cb, Cr and luma of the strongly coloured pixels); None
    when the object is too dull to find this way."""
    rgb = frame.astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    cb, cr = (rgb[..., 2] - luma) / 1.772, (rgb[..., 0] - luma) / 1.402
    weight = np.clip(np.hypot(cb, cr) - 22, 0, None)
    strong = weight > 8
    if strong.sum() < 20:
        return None
    ys, xs = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    return {"x": (weight * xs).sum() / weight.sum(), "y": (weight * ys).sum() / weight.sum(),
            "cb": cb[strong].mean(), "cr": cr[strong].mean(), "luma": luma[strong].mean()}


def statistics(name, videos=60, frame=0):
    label = label_of(name)
    rows = [frame_statistics(render_video(name, video_rng(11, label, i), frame + 1, 64)[frame]) for i in range(videos)]
    rows = [row for row in rows if row is not None]
    assert len(rows) >= 0.75 * videos
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def ks_critical(a, b, alpha_factor=1.63):
    """The two-sample KS distance above which the distributions differ at α = 0.01."""
    return alpha_factor * np.sqrt((len(a) + len(b)) / (len(a) * len(b)))


@pytest.mark.parametrize("frame", [0, 11])
def test_a_single_frame_does_not_tell_left_from_right(frame):
    left, right = statistics("slide_left", frame=frame), statistics("slide_right", frame=frame)
    for key in ("x", "y", "cb", "cr", "luma"):
        assert ks_distance(left[key], right[key]) < ks_critical(left[key], right[key]), key
    # the positions really are spread over the frame, for both directions
    assert left["x"].min() < 16 and left["x"].max() > 48 and right["x"].min() < 16 and right["x"].max() > 48


def test_ball_colours_differ_while_their_brightness_and_motion_do_not():
    balls = {name: statistics(name) for name in ("ball_red", "ball_green", "ball_blue")}
    hues = {name: np.arctan2(s["cr"], s["cb"]) for name, s in balls.items()}
    for a in balls:
        for b in balls:
            if a < b:
                assert ks_distance(hues[a], hues[b]) == 1.0  # colour separates the classes completely
                for key in ("luma", "y"):  # brightness does not, nor where the ball is
                    assert ks_distance(balls[a][key], balls[b][key]) < ks_critical(balls[a][key], balls[b][key]), key


# ---- the order-only classes (class_set="order") ----------------------------------------------------


ORDER_PAIRS = [("shuttle_right_left", "shuttle_left_right"), ("pulse_grow_shrink", "pulse_shrink_grow")]


def sampled(clip, segments=ORDER_TEST_SEGMENTS, flow_length=4):
    """What the test protocol feeds the streams: the frames at the RGB positions, and for each flow stack the
    frame pairs its flow fields are computed from (flow k: frame k → k + 1); a pair of two equal frames is
    "still", since every flow method gives it zero flow, whichever frame it is."""
    frames = [clip[i].tobytes() for i in rgb_indices(len(clip), segments, train=False)]
    pair = lambda k: b"still" if np.array_equal(clip[k], clip[k + 1]) else clip[k].tobytes() + clip[k + 1].tobytes()  # noqa: E731
    starts = flow_indices(len(clip) - 1, segments, flow_length, train=False)[:, 0]
    stacks = [b"|".join(pair(s + k) for k in range(flow_length)) for s in starts.tolist()]
    return frames, stacks


@pytest.mark.parametrize("first, twin", ORDER_PAIRS)
def test_an_order_pair_is_the_same_frames_in_another_order(first, twin):
    a = render_video(first, video_rng(3, 0, 0), 24, 64)
    b = render_video(twin, video_rng(3, 0, 0), 24, 64)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(np.roll(a, 12, axis=0), b)
    # the object rests at both turns, and a rest is one frame repeated (noise too): no flow there at all
    assert all(np.array_equal(a[t], a[0]) for t in (1, 2, 3, 21, 22, 23))
    assert all(np.array_equal(a[t], a[12]) for t in range(9, 16))
    assert not np.array_equal(a[4], a[0]) and not np.array_equal(a[8], a[12])


@pytest.mark.parametrize("first, twin", ORDER_PAIRS)
def test_the_test_protocol_samples_the_same_frames_and_flow_stacks_from_a_clip_and_its_twin(first, twin):
    """With the order demo's test segments a half-clip rotation is a whole number of segments (RGB and flow), and
    the stacks around the two cuts lie in the rests: the sampled inputs are the same, in another order."""
    a = render_video(first, video_rng(6, 0, 1), 24, 64)
    b = render_video(twin, video_rng(6, 0, 1), 24, 64)
    (frames_a, stacks_a), (frames_b, stacks_b) = sampled(a), sampled(b)
    assert sorted(frames_a) == sorted(frames_b) and frames_a != frames_b
    assert sorted(stacks_a) == sorted(stacks_b) and stacks_a != stacks_b
    # the paper's 8 test segments would not do: 20 flow stack starts do not split into 8 equal halves' worth
    stacks_a8, stacks_b8 = sampled(a, 8)[1], sampled(b, 8)[1]
    assert sorted(stacks_a8) != sorted(stacks_b8)


def test_lossless_order_videos_decode_to_the_same_frames_as_their_twins(tmp_path):
    dataset = make_synthetic_dataset(tmp_path, videos_per_class=2, frames=24, size=64, seed=2, class_set="order",
                                     progress=False)
    assert json.loads((tmp_path / "synthetic.json").read_text())["settings"]["lossless"] is True
    for first, twin in ORDER_PAIRS:
        a = read_video_frames(dataset.root / first / f"{first}_000.mp4")
        b = read_video_frames(dataset.root / twin / f"{twin}_000.mp4")
        np.testing.assert_array_equal(np.roll(a, 12, axis=0), b)


def test_order_classes_move_as_named():
    def motion(name, half):
        clip = render_video(name, video_rng(5, 1, 0), 24, 64)
        return mean_motion(clip[:12] if half == 0 else clip[12:])
    assert motion("shuttle_right_left", 0)["vx"] > 0.5 > -0.5 > motion("shuttle_right_left", 1)["vx"]
    assert motion("shuttle_left_right", 0)["vx"] < -0.5 < 0.5 < motion("shuttle_left_right", 1)["vx"]
    assert motion("pulse_grow_shrink", 0)["radial"] > 0.2 > -0.2 > motion("pulse_grow_shrink", 1)["radial"]
    assert motion("pulse_shrink_grow", 0)["radial"] < -0.2 < 0.2 < motion("pulse_shrink_grow", 1)["radial"]


def test_one_frame_tells_the_order_classes_from_the_others_only_their_objects_are_black_and_white():
    """What leaves only the order to learn: every frame of an order clip holds near-black and near-white pixels
    (its object), no frame of any other class holds either."""
    for name, spec in ALL_CLASSES.items():
        for index in range(3):
            clip = render_video(name, video_rng(index, 1, index), 24, 64).astype(np.float64)
            luma = clip @ np.array([0.299, 0.587, 0.114])  # (frames, H, W), BT.601
            dark, bright = (luma < 40).sum(axis=(1, 2)), (luma > 215).sum(axis=(1, 2))
            if spec.group == "order":
                assert dark.min() >= 10 and bright.min() >= 10, (name, index)
            else:
                assert dark.max() == 0 and bright.max() == 0, (name, index)


def as_flow_clip(clip, starts, flow_length=4):
    """A stand-in flow stack per segment, computed from its frames as a flow method would (frame differences)."""
    gray = torch.from_numpy(clip).float().mean(-1)
    pairs = gray[1:] - gray[:-1]  # one "flow field" per consecutive frame pair
    stacks = [torch.stack([pairs[s + k] for k in range(flow_length) for _ in range(2)]) for s in starts.tolist()]
    return (torch.stack(stacks) + 128)[None]


def test_a_stream_without_position_information_scores_a_clip_and_its_twin_the_same():
    """Proof that the paper's stream and its baseline sit at chance on the order pairs under the demo's test
    protocol: the sampled inputs of twins are the same set, and these streams see only the set."""
    from mateffnet.models import StreamNet

    torch.manual_seed(0)
    times = rgb_indices(24, ORDER_TEST_SEGMENTS, train=False)
    starts = flow_indices(23, ORDER_TEST_SEGMENTS, 4, train=False)[:, 0]
    rgb = lambda clip: torch.from_numpy(clip[times.numpy()]).permute(0, 3, 1, 2)[None]  # noqa: E731
    twins = [(render_video(first, video_rng(4, 0, 0), 24, 64), render_video(twin, video_rng(4, 0, 0), 24, 64))
             for first, twin in ORDER_PAIRS]
    for modality, to_clip in (("rgb", rgb), ("flow", lambda clip: as_flow_clip(clip, starts))):
        for options in ({}, {"attention": False}):  # the paper's stream, the paper's baseline
            model = StreamNet(2, modality=modality, backbone="resnet18", input_size=64, embed_dim=32, flow_length=4,
                              **options).eval()
            for a, b in twins:
                assert not torch.equal(to_clip(a), to_clip(b))
                with torch.no_grad():
                    assert torch.allclose(model(to_clip(a)), model(to_clip(b)), atol=1e-5, rtol=1e-5), (modality, options)
    aware = StreamNet(2, backbone="resnet18", input_size=64, embed_dim=32, temporal_encoding="sinusoidal").eval()
    with torch.no_grad():  # the same inputs in another order: what an order-aware stream can tell apart
        assert not torch.allclose(aware(rgb(twins[1][0])), aware(rgb(twins[1][1])), atol=1e-5, rtol=1e-5)


def test_the_order_class_set_holds_the_nine_classes_and_the_order_pairs(tmp_path):
    dataset = make_synthetic_dataset(tmp_path, videos_per_class=2, frames=8, size=48, seed=1, class_set="order",
                                     progress=False)
    names = (tmp_path / "classes.txt").read_text().split()
    assert names == sorted(names) == dataset.class_names and len(names) == 13
    assert set(CLASS_NAMES) < set(names)
    assert {"pulse_grow_shrink", "pulse_shrink_grow", "shuttle_left_right", "shuttle_right_left"} < set(names)
    assert len(read_list(dataset.train_list)) == 13
    with pytest.raises(MateffnetError, match="class_set must be one of default, order"):
        make_synthetic_dataset(tmp_path / "x", videos_per_class=2, class_set="reversed", progress=False)

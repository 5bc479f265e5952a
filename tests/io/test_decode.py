import errno
import os
import signal
import threading
import time
from types import SimpleNamespace

import av
import numpy as np
import pytest

from mateffnet.io.decode import (
    VideoDecodeError,
    VideoReader,
    frame_rgb,
    live_frames,
    open_container,
    open_source,
    output_size,
    parse_size,
    read_video,
)
from mateffnet.errors import MateffnetError


def test_every_real_clip_decodes_to_its_frame_count(real_clips):
    for path, count in real_clips.items():
        frames, info = read_video(path, size=64)
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        assert len(frames) == count, path.name
        assert min(frames.shape[1:3]) == 64
        assert info.fps > 0


def test_non_utf8_metadata_and_audio_track_are_handled(shared_data):
    cartwheel = shared_data / "videos/hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
    if int(av.__version__.split(".")[0]) < 19:
        with pytest.raises(UnicodeDecodeError):  # what a plain PyAV < 19 open does with this file
            av.open(str(cartwheel)).close()
    frames, info = read_video(cartwheel)
    assert frames.shape == (83, 240, 320, 3) and info.fps == 30

    with_audio = shared_data / "videos/ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    with av.open(str(with_audio)) as container:
        assert len(container.streams.audio) == 1
    frames, _ = read_video(with_audio)
    assert frames.shape == (164, 240, 320, 3)


CARTWHEEL = "videos/hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"


def test_the_non_utf8_clip_decodes_under_pyav19s_open_which_has_no_metadata_errors(shared_data, pyav19_open):
    frames, info = read_video(shared_data / CARTWHEEL)
    assert frames.shape == (83, 240, 320, 3) and info.fps == 30
    with open_container(shared_data / CARTWHEEL) as container:  # the undecodable byte survives as a surrogate
        assert container.streams.video[0].metadata["title"].endswith("\udcd3")


def test_open_container_keeps_non_utf8_metadata_readable_on_the_installed_pyav(shared_data):
    with open_container(shared_data / CARTWHEEL) as container:
        assert container.streams.video[0].metadata["title"].startswith("E:\\HumanActionDB")


def test_full_size_frames_equal_pyav_rgb(shared_data):
    path = shared_data / "videos/ucf101/Archery/v_Archery_g01_c01.avi"
    with av.open(str(path)) as container:
        # one scaler thread: PyAV 19 keeps this thread's scaler, and a threaded one hangs forked children
        reference = [f.to_ndarray(format="rgb24", threads=1) for _, f in zip(range(5), container.decode(video=0))]
    frames, _ = read_video(path, indices=[0, 1, 2, 3, 4])
    np.testing.assert_array_equal(frames, np.stack(reference))


def test_indices_pick_frames_in_order_with_repeats(shared_data):
    path = shared_data / "videos/ucf101/Archery/v_Archery_g01_c01.avi"
    everything, _ = read_video(path, size=32)
    picked, _ = read_video(path, size=32, indices=[130, 0, 7, 7])
    np.testing.assert_array_equal(picked, everything[[130, 0, 7, 7]])
    with pytest.raises(MateffnetError, match="past the end"):
        read_video(path, size=32, indices=[131])


def test_resize_short_side_and_fixed_size(shared_data):
    path = shared_data / "videos/hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi"  # 560x240
    frames, info = read_video(path, size=128, max_frames=3)
    assert (info.width, info.height) == (560, 240)
    assert frames.shape == (3, 128, round(560 * 128 / 240), 3)
    frames, _ = read_video(path, size=(340, 256), max_frames=2)
    assert frames.shape == (2, 256, 340, 3)


def test_size_helpers():
    assert parse_size("256") == 256
    assert parse_size("340x256") == (340, 256)
    assert parse_size("none") is None
    for bad in ("0", "abc", "340x", "-5"):
        with pytest.raises(MateffnetError, match="frame size"):
            parse_size(bad)
    assert output_size(320, 240, 256) == (341, 256)
    assert output_size(240, 320, 256) == (256, 341)
    assert output_size(320, 240, (340, 256)) == (340, 256)
    assert output_size(320, 240, None) == (320, 240)


def test_display_rotation_is_applied(tmp_path, video_writer, square_frames):
    frames = square_frames(n=6)  # 48x64, the square starts near the top-left
    frames[:, :4, :4] = 255  # a white marker in the top-left corner
    path = video_writer(tmp_path / "portrait.mp4", frames, codec="libx264", rotation=90)
    with VideoReader(path) as reader:
        decoded = np.stack(list(reader.frames()))
        assert reader.info.rotation == 90
        assert (reader.info.width, reader.info.height) == (48, 64)
    assert decoded.shape == (6, 64, 48, 3)
    # 90° counter-clockwise (FFmpeg's display-matrix convention): top-left moves to bottom-left
    assert decoded[0, -4:, :4].mean() > 200
    assert decoded[0, :4, :4].mean() < 150
    resized, _ = read_video(path, size=32)
    assert resized.shape == (6, round(64 * 32 / 48), 32, 3)


def test_variable_frame_rate_keeps_every_frame(tmp_path, video_writer):
    frames = np.stack([np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)])
    pts = [0, 33, 100, 133, 300, 333, 340, 500, 900, 933]
    path = video_writer(tmp_path / "vfr.mp4", frames, codec="libx264", pts_ms=pts)
    decoded, _ = read_video(path)
    assert len(decoded) == 10
    means = decoded.reshape(10, -1).mean(1)
    assert np.all(np.abs(means - frames.reshape(10, -1).mean(1)) < 4)


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("zero.avi", lambda p, src: p.write_bytes(b""), "empty"),
        ("text.avi", lambda p, src: p.write_text("this is not a video\n"), "unreadable"),
        ("half.avi", lambda p, src: p.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), "truncated"),
        ("absent.avi", lambda p, src: None, "missing"),
    ],
)
def test_bad_files_raise_a_named_reason(tmp_path, shared_data, name, make, reason):
    source = shared_data / "videos/ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    path = tmp_path / name
    make(path, source)
    with pytest.raises(VideoDecodeError) as caught:
        read_video(path, size=32)
    assert caught.value.reason == reason
    assert name in str(caught.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError) as caught:
        read_video(path)
    assert caught.value.reason == "no_video_stream"


def test_edit_list_trim_is_not_mistaken_for_truncation(tmp_path, video_writer, square_frames):
    """A stream-copy trim keeps frames before the cut and hides them with an MP4 edit list: fewer
    frames decode than the file declares, but the video is complete."""
    source = video_writer(tmp_path / "full.mp4", square_frames(n=40), codec="libx264")
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(source)) as src, av.open(str(trimmed), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = 12 * int(1 / (stream.time_base * stream.average_rate))  # 12 frames before time 0
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)
    with av.open(str(trimmed)) as container:
        assert container.streams.video[0].frames == 40  # the file still holds every frame
    frames, _ = read_video(trimmed)
    assert len(frames) == 28


def test_cut_off_mp4_with_index_in_front_is_truncated(tmp_path, square_frames):
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264 encoder")
    frames = square_frames(n=60)
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # moov before mdat
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    assert len(read_video(path)[0]) == 60
    with pytest.raises(VideoDecodeError) as caught:
        read_video(tmp_path / "cut.mp4")
    assert caught.value.reason == "truncated", str(caught.value)


class _ClosingSource:
    """A container whose demuxer fails as PyAV 19 (FFmpeg 9) does when a server closes the connection."""

    def __init__(self, name):
        self.name = name

    def demux(self, stream):
        raise av.error.OSError(errno.EIO, "Input/output error")
        yield  # a generator, like PyAV's demux


_STREAM = SimpleNamespace(average_rate=25, guessed_rate=None, base_rate=None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/live", "udp://127.0.0.1:5000"])
def test_a_network_stream_closed_with_eio_ends_like_a_stream_that_ended(url):
    assert list(live_frames(_ClosingSource(url), _STREAM)) == []


@pytest.mark.parametrize("source", ["/dev/video0", "/videos/clip.mp4"])
def test_eio_from_a_camera_or_a_file_is_a_broken_source(source):
    with pytest.raises(VideoDecodeError, match="corrupt"):
        list(live_frames(_ClosingSource(source), _STREAM))


def _wait_or_kill(child: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while (ended := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if ended == (0, 0):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked child hung freeing a video scaler")
    assert os.waitstatus_to_exitcode(ended[1]) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("reader", ["VideoReader", "live_frames"])
def test_a_reader_freed_in_a_forked_child_does_not_hang_it(tmp_path, video_writer, square_frames, reader):
    # a DataLoader worker forked while a reader is open (or awaits garbage collection) frees it in the child;
    # a scaler with threads of its own waited there forever for threads that do not exist in the child
    path = video_writer(tmp_path / "clip.mp4", square_frames(n=8, height=96, width=128), codec="libx264")
    if reader == "VideoReader":
        frames = VideoReader(path, size=48).frames()
    else:
        frames = live_frames(*open_source(str(path)), size=48)
    next(frames)
    child = os.fork()
    if child == 0:
        del frames
        os._exit(0)
    _wait_or_kill(child)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_frames_converted_on_one_thread_do_not_hang_a_child_forked_from_another(tmp_path, video_writer, square_frames):
    # PyAV 19 keeps the scaler of a thread's frame conversions; a child forked from another thread (the
    # loader's) frees this thread's state, and with it that scaler
    path = video_writer(tmp_path / "clip.mp4", square_frames(n=4, height=96, width=128), codec="libx264")
    with open_container(path) as container:
        for frame in container.decode(video=0):
            assert frame_rgb(frame, 64, 48).shape == (48, 64, 3) and frame_rgb(frame).shape == (96, 128, 3)
    children = []

    def fork() -> None:
        child = os.fork()
        if child == 0:
            os._exit(0)
        children.append(child)

    thread = threading.Thread(target=fork)
    thread.start()
    thread.join()
    _wait_or_kill(children[0])

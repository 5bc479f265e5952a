"""Video decoding with PyAV: every frame (or a chosen set) as RGB uint8, upright, optionally resized.

Frames are numbered 0..N-1 in the order the decoder returns them (presentation order); variable
frame rates need nothing special because frames are counted, not timed. Only the best video stream
is demuxed (audio tracks are skipped), container metadata that is not UTF-8 is ignored (HMDB51),
a display rotation (phone videos) is applied as FFmpeg's command line does, and a damaged packet
is skipped the way FFmpeg does. A file that yields clearly fewer frames than its container
declares is reported as truncated rather than silently shortened.

Every failure is a `VideoDecodeError` with a short `reason` (one of `FAILURE_REASONS`) that the
dataset-scale job writes into its report.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mateffnet.errors import MateffnetError

FAILURE_REASONS = {
    "missing": "the file does not exist",
    "empty": "the file has zero bytes",
    "unreadable": "not a video FFmpeg can open (wrong format, unreadable file)",
    "no_video_stream": "the container has no video stream",
    "no_frames": "the video stream decodes to zero frames",
    "truncated": "far fewer frames decode than the container declares (cut-off file)",
    "corrupt": "packets fail to decode",
    "too_short": "too few frames for optical flow (needs at least 2)",
}

# A video is reported truncated when fewer than this fraction of its declared frames decode (minus
# a small absolute slack: a frame or two dropped by the decoder or an edit list is normal).
MIN_DECODED_FRACTION = 0.9
FRAME_SLACK = 2

Size = int | tuple[int, int] | None  # short side in pixels, or (width, height), or None for as-is


class VideoDecodeError(MateffnetError):
    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}: {detail}")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video (upright sizes, i.e. after rotation)."""

    width: int
    height: int
    fps: float
    declared_frames: int  # 0 when the container does not say
    duration: float  # seconds, 0.0 when unknown
    rotation: int  # degrees counter-clockwise applied to make frames upright (0, 90, 180, 270)
    codec: str


def parse_size(text: str) -> Size:
    """'256' → 256 (short side); '340x256' → (340, 256) (width, height); 'none'/'' → None."""
    text = text.strip().lower()
    if text in ("", "none", "original"):
        return None
    try:
        if "x" in text:
            width, height = (int(part) for part in text.split("x"))
            if width > 0 and height > 0:
                return (width, height)
        elif int(text) > 0:
            return int(text)
    except ValueError:
        pass
    raise MateffnetError(f"bad frame size {text!r}; expected a short side like 256 or WIDTHxHEIGHT like 340x256")


def output_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """The (width, height) frames of `width`×`height` get under `size` (aspect kept for a short side)."""
    if size is None:
        return width, height
    if isinstance(size, int):
        if width <= height:
            return size, max(1, round(height * size / width))
        return max(1, round(width * size / height)), size
    return int(size[0]), int(size[1])


# Frames are scaled on the decoding thread. A scaler with threads of its own (PyAV's default, and threads=0)
# hangs a forked child that frees it, since its threads do not exist there: a DataLoader or multiprocessing
# worker forked while a reader is open, or while a finished one awaits garbage collection (PyAV 18 and 19).
# One thread scales the frames of a 1080p or a 340x256 video no slower here (BENCHMARKS.md, "Data loading").
SCALER_THREADS = 1


def frame_rgb(frame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A decoded PyAV frame → uint8 (H, W, 3) RGB, scaled (bilinear) to width × height if given, on
    `SCALER_THREADS`: PyAV 19 keeps the scaler of frame conversions for the rest of the calling thread's life."""
    if width is None:
        return frame.to_ndarray(format="rgb24", threads=SCALER_THREADS)
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR",
                          threads=SCALER_THREADS).to_ndarray()


def _av():
    import av
    import av.logging
    import av.video.reformatter

    av.logging.set_level(None)  # FFmpeg's own warnings about damaged packets are ours to report
    return av


def open_container(path: str | os.PathLike, mode: str = "r", **options):
    """`av.open(path, mode, **options)`: the one place the package opens PyAV containers.

    Reading never fails on container or stream metadata that is not UTF-8 (HMDB51's AVIs): PyAV < 19
    decodes it strictly unless told `metadata_errors="ignore"`; PyAV 19 removed that keyword and
    always decodes metadata as UTF-8 with `surrogateescape` (undecodable bytes become lone surrogates).
    """
    av = _av()
    if mode == "r" and int(av.__version__.split(".")[0]) < 19:
        options.setdefault("metadata_errors", "ignore")
    return av.open(str(path), mode, **options)


class VideoReader:
    """An open video: `info`, the output `size` (width, height), and `frames()`/`chunks()` of RGB.

    `info` and `size` are final once the first frame has been decoded (a display rotation is only
    visible on decoded frames). Use as a context manager. `threads=0` lets FFmpeg pick its decoding
    threads; pass 1 when many decoders run in parallel processes. Scaling uses `SCALER_THREADS`.
    """

    def __init__(self, path: str | os.PathLike, size: Size = None, threads: int = 0):
        self.path = Path(path)
        self._container = None
        av = _av()
        try:
            if self.path.stat().st_size == 0:
                raise VideoDecodeError(path, "empty", "the file has zero bytes")
        except FileNotFoundError:
            raise VideoDecodeError(path, "missing", "no such file") from None
        except OSError as error:
            raise VideoDecodeError(path, "unreadable", error.strerror or str(error)) from None
        try:
            self._container = open_container(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
            raise VideoDecodeError(path, "unreadable", _one_line(error)) from None
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(path, "no_video_stream", "the container holds no video stream")
            self._stream = self._container.streams.best("video")
            context = self._stream.codec_context
            context.thread_count = threads
            context.thread_type = "AUTO"
            self.info = _probe(self._stream, self._container)
        except BaseException:
            self.close()
            raise
        self._size_request = size
        self.size = output_size(self.info.width, self.info.height, size)
        self._rotation_k = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def frames(self, max_frames: int | None = None) -> Iterator[np.ndarray]:
        """Every frame as uint8 (H, W, 3) RGB at `self.size`; raises VideoDecodeError at the end on
        a damaged or cut-off file (after yielding what decoded)."""
        av = _av()
        if max_frames is not None and max_frames <= 0:
            return
        # One reformatter for the whole video keeps its scaler: `frame.to_ndarray(width=...)` would
        # build a new one per frame, 5-10x slower.
        reformatter = av.video.reformatter.VideoReformatter()
        width = height = 0
        count = errors = 0
        last_error = ""
        first_time = last_time = None
        stream = self._stream
        try:
            for packet in self._container.demux(stream):
                try:
                    decoded = packet.decode()
                except (av.FFmpegError, ValueError) as error:
                    errors, last_error = errors + 1, _one_line(error)
                    continue
                for frame in decoded:
                    if count == 0:
                        width, height = self._settle_rotation(frame)
                    image = reformatter.reformat(
                        frame, width=width, height=height, format="rgb24", interpolation="BILINEAR",
                        threads=SCALER_THREADS,
                    ).to_ndarray()
                    if self._rotation_k:
                        image = np.ascontiguousarray(np.rot90(image, self._rotation_k))
                    if frame.time is not None:
                        first_time = frame.time if first_time is None else first_time
                        last_time = frame.time
                    yield image
                    count += 1
                    if max_frames is not None and count >= max_frames:
                        return
        except (av.FFmpegError, OSError) as error:  # demuxing itself failed: the rest of the file is lost
            errors, last_error = errors + 1, _one_line(error)
        self._check_complete(count, errors, last_error, first_time, last_time)

    def _settle_rotation(self, frame) -> tuple[int, int]:
        """Read the display rotation from the first frame (PyAV exposes it there), make `info` and
        `size` upright, and return the size to scale decoded (not yet rotated) frames to."""
        rotation = (round((getattr(frame, "rotation", 0) or 0) / 90) * 90) % 360
        if rotation and rotation != self.info.rotation:
            width, height = self.info.width, self.info.height
            if rotation % 180:
                width, height = height, width
            self.info = dataclasses.replace(self.info, width=width, height=height, rotation=rotation)
            self.size = output_size(width, height, self._size_request)
        self._rotation_k = rotation // 90
        width, height = self.size
        return (height, width) if self._rotation_k % 2 else (width, height)

    def chunks(self, chunk_size: int = 64, max_frames: int | None = None) -> Iterator[np.ndarray]:
        """The frames in consecutive uint8 (n, H, W, 3) blocks of up to `chunk_size`."""
        block: list[np.ndarray] = []
        for image in self.frames(max_frames):
            block.append(image)
            if len(block) == chunk_size:
                yield np.stack(block)
                block = []
        if block:
            yield np.stack(block)

    def _check_complete(self, count: int, errors: int, last_error: str, first_time, last_time) -> None:
        declared = self.info.declared_frames or round(self.info.duration * self.info.fps)
        if count == 0 and not errors:
            raise VideoDecodeError(self.path, "no_frames", "the video stream decodes to zero frames")
        short = declared and count < MIN_DECODED_FRACTION * declared - FRAME_SLACK
        if count and (not short or self._edited(first_time, last_time)):
            return
        # a cut-off file breaks a packet or two at its end; more bad packets mean damage inside
        reason = "truncated" if declared and errors <= FRAME_SLACK else "corrupt"
        detail = f"{count} of {declared} declared frames decode" if declared else "no frame decodes"
        if errors:
            detail += f" ({errors} bad packet{'s' * (errors > 1)}: {last_error})"
        raise VideoDecodeError(self.path, reason, detail)

    def _edited(self, first_time: float | None, last_time: float | None) -> bool:
        """An MP4/MOV whose edit list hides frames (a stream-copy trim): fewer frames decode than
        the file holds, yet they span the whole presented duration. Only this container family has
        edit lists; elsewhere (AVI) the duration shrinks with the file, so it proves nothing."""
        container = self._container
        if "mp4" not in container.format.name or not container.duration or first_time is None:
            return False
        step = 1.0 / self.info.fps if self.info.fps else 0.0
        presented = container.duration / 1_000_000
        return last_time - first_time + step >= MIN_DECODED_FRACTION * presented - 0.1


def read_video(
    path: str | os.PathLike,
    size: Size = None,
    indices: Sequence[int] | None = None,
    max_frames: int | None = None,
    threads: int = 0,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video → (uint8 (N, H, W, 3) RGB frames, VideoInfo).

    `indices` picks frames (0-based, any order, repeats allowed); the video is decoded up to the
    largest one. `max_frames` keeps only the first frames. `size` as in `output_size`.
    """
    with VideoReader(path, size=size, threads=threads) as reader:
        if indices is None:
            frames = list(reader.frames(max_frames))
        else:
            wanted = [int(i) for i in indices]
            if any(i < 0 for i in wanted):
                raise MateffnetError(f"{path}: frame indices must be >= 0, got {min(wanted)}")
            limit = max(wanted, default=-1) + 1
            if max_frames is not None:
                limit = min(limit, max_frames)
            frames = []
            if limit > 0:
                for image in reader.frames(limit):
                    frames.append(image)
            if wanted and max(wanted) >= len(frames):
                raise MateffnetError(
                    f"{path}: frame index {max(wanted)} is past the end of the video ({len(frames)} frames)"
                )
            frames = [frames[i] for i in wanted]
        width, height = reader.size
        array = np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
        return array, reader.info


def _probe(stream, container) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    return VideoInfo(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=round(fps, 6),
        declared_frames=int(stream.frames or 0),
        duration=round(duration, 6),
        rotation=0,
        codec=stream.codec_context.name,
    )


def _one_line(error: BaseException) -> str:
    """The error's message without the errno and file name FFmpeg errors repeat."""
    strerror = getattr(error, "strerror", None)
    text = (strerror if isinstance(strerror, str) and strerror else str(error)).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# ------------------------------------------------------------------------------------ live sources

LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "rtp://")


def is_live_source(source: str) -> bool:
    """A camera (/dev/videoN) or a network URL: frames come at the source's pace, not as fast as we read."""
    return source.startswith("/dev/video") or is_network_source(source)


def is_network_source(source: str) -> bool:
    return source.lower().startswith(LIVE_PREFIXES)


def open_source(source: str, timeout: float = 10.0):
    """Open a file, a camera (`/dev/videoN`, FFmpeg's v4l2 input) or a network stream (whatever FFmpeg opens:
    rtsp://, http://, udp://, ...) → (container, its best video stream). Network reads give up after
    `timeout` seconds without data. Raises `VideoDecodeError` (reason "unreadable" or "no_video_stream")."""
    av = _av()
    options, container_format = {}, None
    if source.startswith("/dev/video"):
        container_format = "v4l2"
    elif source.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
    try:
        container = open_container(source, format=container_format, options=options, timeout=(timeout, timeout))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        raise VideoDecodeError(source, "unreadable", _one_line(error)) from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(source, "no_video_stream", "the source holds no video stream")
    stream = container.streams.best("video")
    stream.codec_context.thread_type = "AUTO"
    return container, stream


def source_rate(stream) -> float:
    """Frames per second the stream declares (0.0 when it does not say)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def live_frames(container, stream, size: Size = None, keep=None) -> Iterator[tuple[float, np.ndarray | None]]:
    """(time in seconds, uint8 (H, W, 3) RGB at `size`) per decoded frame of an open source, in order.

    `keep(time)` → False skips the frame's conversion (it is yielded as (time, None)): how a live reader
    drops frames cheaply when it falls behind. Damaged packets are skipped; a broken connection, or no data
    within the read timeout, raises `VideoDecodeError` ("corrupt"); the end of the source ends the iterator."""
    av = _av()
    reformatter = av.video.reformatter.VideoReformatter()
    width = height = 0
    fallback = 0.0
    rate = source_rate(stream) or 25.0
    try:
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except (av.FFmpegError, ValueError):
                continue
            for frame in decoded:
                if not width:
                    width, height = output_size(frame.width, frame.height, size)
                moment = float(frame.time) if frame.time is not None else fallback
                fallback = moment + 1.0 / rate
                if keep is not None and not keep(moment):
                    yield moment, None
                    continue
                yield moment, reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                                   interpolation="BILINEAR", threads=SCALER_THREADS).to_ndarray()
    except av.ExitError:  # FFmpeg's read timeout (the `timeout` of `open_source`) interrupted the read
        raise VideoDecodeError(getattr(container, "name", "source"), "corrupt",
                               "no data within the read timeout (the source stalled or the connection broke)") from None
    except (av.FFmpegError, OSError) as error:
        name = getattr(container, "name", "source")
        if getattr(error, "errno", None) == errno.EIO and is_network_source(name):
            # FFmpeg 9 (PyAV 19) reports a network stream whose server closed the connection as EIO where
            # FFmpeg 7 ended the demuxer: neither can tell a finished server from a killed one, so both end.
            return
        raise VideoDecodeError(name, "corrupt", _one_line(error)) from None

"""A small synthetic action dataset, written as real video files, that shows why two streams exist.

Nine classes of short clips (default 64×64, 24 frames, 8 fps) of one object on a random static
background, with slight per-frame noise:

- six **motion-defined** classes in three pairs whose two classes look the same and differ only in the
  direction of motion: a textured square sliding left / right (wrapping around the frame edges), a disc of
  concentric rings expanding / contracting, a pinwheel-textured disc spinning clockwise / counter-clockwise;
- three **appearance-defined** classes that move the same way (bobbing up and down) and differ only in
  colour: a red, a green and a blue textured ball of equal brightness.

Every motion is stationary in time: the object's position, ring phase or spin angle at any frame is uniformly
distributed, and the textures are mirror-symmetric in distribution, so no single frame (nor the set of
sampled frames, which is all an RGB stream sees, since it has no notion of their order) tells left from
right, expanding from contracting or clockwise from counter-clockwise; the optical flow does. The balls share
one motion and one brightness distribution (their colours differ only in chroma, BT.601), so their flow is
the same whatever the colour; the RGB frames tell them apart at a glance.

**Order-only classes** (`class_set="order"`, the nine above plus four; what `mateffnet demo --order` uses):
two pairs whose two classes are made of the same frames and differ only in the order of those frames:

- a textured diamond that slides right from the left edge (partly out of the frame there), rests, slides back
  left and rests (`shuttle_right_left`) vs one that slides left first (`shuttle_left_right`);
- a checkered disc that grows, rests, shrinks and rests (`pulse_grow_shrink`) vs one that shrinks first
  (`pulse_shrink_grow`).

Both order objects are black and white (`_Scene.order_colours`), darker and brighter than anything of the other
classes: one frame tells an order clip from the others and its pair from the other pair (disc or diamond),
and only the order of the frames tells the two classes of a pair apart.

The second class of a pair is the first one's clip rotated by half its length (`np.roll(clip, frames // 2)`),
so both hold the same frames. Not the clip played backwards: reversing time also reverses every flow field,
so a reversed "grow then shrink" would still grow first and its flow stacks would be the negated ones, a
different set. The motion (`order_phase`) is cyclic: rest, move for a quarter of the clip, rest, move back,
rest; each rest spans a quarter of the clip around a turn (frames 21–3 and 9–15 of 24), and a resting object
is one frame repeated, noise included (`held_frames`): no flow at all. The demo's clips are encoded losslessly,
so twins decode to the same frames too. A square sliding "right then up" vs "up then right" would not do: its
two classes trace different L shapes, which a set of frames already tells apart.

What a stream sees at test time is then the same set for a clip and its twin, in another order, when the
half-clip rotation is a whole number of test segments for the frames and for the flow stacks:
`ORDER_TEST_SEGMENTS` = 10 segments of a 24-frame clip with stacks of 4 flows (23 flows, 20 stack starts)
put RGB frames 12 frames = 5 segments apart and stack starts 12 = 6 segments apart, and the only stacks
without a counterpart in the twin lie wholly in a rest (all zero flow in both). A model that only sees the
set of its segments (the paper's stream: attention without position information, then a mean; or its
baseline) therefore gives a clip and its twin the same scores and sits at chance on these pairs, while a
single frame's content (where the diamond is, how large the disc is) together with the segment's position
in the clip tells the pairs apart. The paper's 8 test segments do not give the same sets (20 stack starts do
not split into two halves 12 flows apart). Video i of a pair's second class is drawn from the random stream
of video i of the first class, so the dataset holds each clip together with its rotated twin.

Layout written by `make_synthetic_dataset(out_dir, ...)`:

    out_dir/synthetic.json                 the settings, the classes (name, group, description), counts
    out_dir/classes.txt                    class names, one a line; line i (0-based) is label i
    out_dir/train.txt, out_dir/test.txt    one video a line: "<class>/<class>_<i:03d>.mp4 <label>"
    out_dir/<class>/<class>_<i:03d>.mp4    H.264 (libx264; MPEG-4 part 2 if the PyAV build lacks it)

A horizontal flip turns slide_left into slide_right and spin_cw into spin_ccw (and back): train on this
dataset with horizontal-flip augmentation off, or flip and swap labels with `HORIZONTAL_FLIP_SWAPS` (the
rings and the balls are mirror-symmetric in distribution, so their labels survive a flip).

The order-only pairs: a flip swaps shuttle_right_left and shuttle_left_right (the diamond starts on the
left in one, on the right in the other); the pulses survive it.

Class names sort alphabetically in label order, so a folder-per-class reader that sorts class folders
assigns the same labels as the list files. Each video is generated from its own random stream
(seed, class, index), so the same seed gives the same frames whatever was generated before, and an
interrupted run resumes: finished videos (written under a temporary name, then renamed) are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mateffnet.io.decode import frame_rgb, open_container
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json, atomic_write_text

GENERATOR_VERSION = 1
ORDER_CLASSES_VERSION = 4  # 2: the order classes rest at their turns and are encoded losslessly; 3: the shuttle's
# left end is partly out of the frame; 4: the order objects are black and white
MANIFEST_FILE = "synthetic.json"
CLASSES_FILE = "classes.txt"
SPLIT_FILES = {"train": "train.txt", "test": "test.txt"}
VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class SyntheticClass:
    name: str
    group: str  # "motion" (only the motion tells it from its pair) or "appearance" (only the colour does)
    description: str


SYNTHETIC_CLASSES = (
    SyntheticClass("ball_blue", "appearance", "a blue textured ball bobbing up and down"),
    SyntheticClass("ball_green", "appearance", "a green textured ball bobbing up and down"),
    SyntheticClass("ball_red", "appearance", "a red textured ball bobbing up and down"),
    SyntheticClass("rings_contract", "motion", "a disc of concentric rings moving inwards"),
    SyntheticClass("rings_expand", "motion", "a disc of concentric rings moving outwards"),
    SyntheticClass("slide_left", "motion", "a textured square sliding left, wrapping around the edges"),
    SyntheticClass("slide_right", "motion", "a textured square sliding right, wrapping around the edges"),
    SyntheticClass("spin_ccw", "motion", "a pinwheel-textured disc turning counter-clockwise"),
    SyntheticClass("spin_cw", "motion", "a pinwheel-textured disc turning clockwise"),
)
ORDER_CLASSES = (
    SyntheticClass("pulse_grow_shrink", "order", "a black-and-white checkered disc growing, then shrinking back"),
    SyntheticClass("pulse_shrink_grow", "order", "a black-and-white checkered disc shrinking, then growing back"),
    SyntheticClass("shuttle_left_right", "order", "a black-and-white textured diamond sliding left, then back right"),
    SyntheticClass("shuttle_right_left", "order", "a black-and-white textured diamond sliding right, then back left"),
)
CLASS_NAMES = tuple(c.name for c in SYNTHETIC_CLASSES)
# Which classes a dataset holds: "default" (the nine above, the demo's) or "order" (plus the order-only pairs).
CLASS_SETS = {
    "default": SYNTHETIC_CLASSES,
    "order": tuple(sorted(SYNTHETIC_CLASSES + ORDER_CLASSES, key=lambda c: c.name)),
}
ALL_CLASSES = {c.name: c for c in CLASS_SETS["order"]}
# Test segments under which a clip of the order classes (24 frames, flow stacks of 4) and its twin give the same
# sampled frames and flow stacks (module docstring); the paper's 8 do not.
ORDER_TEST_SEGMENTS = 10
# The second class of each order-only pair is the first one's clip rotated by half its length.
ROTATED_TWIN = {"shuttle_left_right": "shuttle_right_left", "pulse_shrink_grow": "pulse_grow_shrink"}
# What a horizontal flip makes of a class (classes not named keep their label).
HORIZONTAL_FLIP_SWAPS = {"slide_left": "slide_right", "slide_right": "slide_left", "spin_cw": "spin_ccw",
                         "spin_ccw": "spin_cw", "shuttle_left_right": "shuttle_right_left",
                         "shuttle_right_left": "shuttle_left_right"}

# Hue of each ball in the (Cb, Cr) chroma plane of BT.601 YCbCr: the directions of pure red, green, blue.
_BALL_HUES = {"ball_red": math.atan2(0.5, -0.1687), "ball_green": math.atan2(-0.4187, -0.3313),
              "ball_blue": math.atan2(-0.0813, 0.5)}


@dataclass
class SyntheticDataset:
    root: Path
    class_names: list[str]
    train_list: Path
    test_list: Path
    written: int  # videos generated by this call
    kept: int  # videos already there from an earlier (interrupted) call

    @property
    def num_videos(self) -> int:
        return self.written + self.kept


def make_synthetic_dataset(
    out_dir: str | Path,
    videos_per_class: int = 24,
    frames: int = 24,
    size: int = 64,
    seed: int = 0,
    *,
    test_fraction: float = 0.25,
    fps: int = 8,
    codec: str | None = None,
    class_set: str = "default",
    progress: bool = True,
) -> SyntheticDataset:
    """Write the dataset under `out_dir` (see the module docstring) and return where everything is.

    `videos_per_class` videos per class, the last round(test_fraction · videos_per_class) (at least one) of
    each class in the test list, the rest in the train list. `codec`: "libx264" or "mpeg4"; None picks
    libx264 when PyAV's FFmpeg has it. `class_set`: "default" (nine classes) or "order" (thirteen, with the
    order-only pairs; labels follow the sorted names of the set). Rerunning with the same settings keeps the videos already written;
    a folder made with other settings is refused (one-line error) rather than mixed.
    """
    import av
    from tqdm import tqdm

    _check_settings(videos_per_class, frames, size, test_fraction, fps)
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    if codec not in ("libx264", "mpeg4"):
        raise MateffnetError(f"codec must be 'libx264' or 'mpeg4', got {codec!r}")
    if codec not in av.codecs_available:
        raise MateffnetError(f"this PyAV build's FFmpeg has no {codec} encoder")
    if class_set not in CLASS_SETS:
        raise MateffnetError(f"class_set must be one of {', '.join(CLASS_SETS)}, got {class_set!r}")
    classes = CLASS_SETS[class_set]
    names = tuple(c.name for c in classes)
    out_dir = Path(out_dir)
    settings = {"generator_version": GENERATOR_VERSION, "videos_per_class": videos_per_class, "frames": frames,
                "size": size, "seed": seed, "test_fraction": test_fraction, "fps": fps, "codec": codec}
    lossless = class_set == "order" and codec == "libx264"  # twins decode to the very same frames
    if class_set != "default":  # folders made before class sets existed keep their settings
        settings.update(class_set=class_set, order_classes_version=ORDER_CLASSES_VERSION, lossless=lossless)
    _claim_folder(out_dir, settings, classes)

    num_test = min(videos_per_class - 1, max(1, round(test_fraction * videos_per_class)))
    lines = {"train": [], "test": []}
    written = kept = 0
    jobs = [(label, index) for label in range(len(names)) for index in range(videos_per_class)]
    for label, index in tqdm(jobs, desc="synthetic videos", unit="video", disable=not progress):
        name = names[label]
        relative = f"{name}/{name}_{index:03d}{VIDEO_SUFFIX}"
        path = out_dir / relative
        if _is_complete(path, frames):
            kept += 1
        else:
            twin_label = names.index(ROTATED_TWIN.get(name, name))  # a rotated twin shares its twin's stream
            clip = render_video(name, video_rng(seed, twin_label, index), frames, size)
            write_video(path, clip, fps, codec, lossless)
            written += 1
        split = "test" if index >= videos_per_class - num_test else "train"
        lines[split].append(f"{relative} {label}")

    for split, file in SPLIT_FILES.items():
        atomic_write_text(out_dir / file, "\n".join(lines[split]) + "\n")
    atomic_write_text(out_dir / CLASSES_FILE, "\n".join(names) + "\n")
    manifest = {**_manifest_head(settings, classes), "train_videos": len(lines["train"]), "test_videos": len(lines["test"]),
                "complete": True}
    atomic_write_json(out_dir / MANIFEST_FILE, manifest)
    if progress:
        print(f"synthetic dataset in {out_dir}: {len(names)} classes, {len(lines['train'])} train / "
              f"{len(lines['test'])} test videos ({written} written, {kept} already there)")
    return SyntheticDataset(out_dir, list(names), out_dir / SPLIT_FILES["train"], out_dir / SPLIT_FILES["test"],
                            written, kept)


def video_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The random stream of one video: depends only on (seed, class, index)."""
    return np.random.default_rng([GENERATOR_VERSION, seed, label, index])


def render_video(class_name: str, rng: np.random.Generator, frames: int = 24, size: int = 64) -> np.ndarray:
    """One clip of `class_name` as uint8 (frames, size, size, 3) RGB, drawn with `rng`."""
    if class_name not in ALL_CLASSES:
        raise MateffnetError(f"unknown synthetic class {class_name!r}; expected one of {', '.join(ALL_CLASSES)}")
    if class_name in ROTATED_TWIN:  # the same frames as its twin's clip, in another order (module docstring)
        return np.roll(render_video(ROTATED_TWIN[class_name], rng, frames, size), frames // 2, axis=0)
    scene = _Scene(rng, size)
    background = scene.background()
    kind, _, variant = class_name.partition("_")
    draw = {"slide": scene.slide, "rings": scene.rings, "spin": scene.spin, "ball": scene.ball,
            "shuttle": scene.shuttle, "pulse": scene.pulse}[kind]
    layers = draw(variant, frames)  # (frames, size, size, 3) colour and (frames, size, size, 1) coverage
    clip = background[None] * (1.0 - layers[1]) + layers[0] * layers[1]
    clip = clip + rng.normal(0.0, 3.0, clip.shape)  # sensor noise, new every frame
    clip = np.clip(np.rint(clip), 0, 255).astype(np.uint8)
    if kind in ("shuttle", "pulse"):  # a resting object is the very same frame (noise too): module docstring
        clip = clip[held_frames(frames)]
    return clip


def order_phase(frames: int) -> np.ndarray:
    """(frames,) the order classes' motion, 0 → 1 → 0: rest at 0, move, rest at 1 (the middle), move back, rest.

    With d = min(t, frames − t), the cyclic distance of frame t from frame 0: 0 where d ≤ frames/8, 1 where
    d ≥ 3·frames/8, linear between. Symmetric under rotating the clip by frames/2 with 0 and 1 swapped.
    """
    distance = np.minimum(np.arange(frames), frames - np.arange(frames))
    return np.clip((distance - frames / 8) / (frames / 4), 0.0, 1.0)


def held_frames(frames: int) -> np.ndarray:
    """(frames,) for each frame the frame it repeats: every frame of a rest is the rest's first frame (0 or frames/2)."""
    phase, index = order_phase(frames), np.arange(frames)
    return np.where(phase == 0.0, 0, np.where(phase == 1.0, frames // 2, index))


def write_video(path: str | Path, clip: np.ndarray, fps: int = 8, codec: str = "libx264", lossless: bool = False) -> Path:
    """Encode uint8 (N, H, W, 3) frames as an .mp4 file, atomically.

    `lossless` (libx264 only): quantiser 0, so equal frames decode equal wherever they sit in the stream
    (the chroma is still subsampled to 4:2:0, the same way for equal frames).
    """
    import av

    path = Path(path)
    with atomic_path(path) as tmp:
        with open_container(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = clip.shape[2], clip.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1  # frames this small encode faster on one thread than with frame threading
            if codec == "libx264":
                # x264's lookahead and macroblock tree made the same frames encode differently from run to
                # run (seen here at 64×64 even on one thread); without them a seed gives identical files.
                stream.options = {"crf": "0" if lossless else "12",
                                  "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:rc-lookahead=0:mbtree=0"
                                                 + (":qp=0" if lossless else "")}
            elif lossless:
                raise MateffnetError("lossless encoding needs libx264")
            else:
                stream.bit_rate = 2_000_000
            for image in clip:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def read_video_frames(path: str | Path) -> np.ndarray:
    """All frames of a video as uint8 (N, H, W, 3) RGB (a plain PyAV reader, for checking the files)."""
    import av

    try:
        with open_container(path) as container:
            return np.stack([frame_rgb(frame) for frame in container.decode(video=0)])
    except (av.error.FFmpegError, ValueError) as error:
        raise MateffnetError(f"{path}: cannot decode ({error})") from error


class _Scene:
    """The drawing of one video: a static background and the object of one class (colour + coverage layers)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        self.scale = size / 64.0  # every length below is in pixels at 64×64
        centres = np.arange(size) + 0.5
        self.x, self.y = np.meshgrid(centres, centres)  # (size, size), pixel centres

    # ---- pieces -------------------------------------------------------------------------------
    def colour(self, luma: float, hue: float, chroma: float) -> np.ndarray:
        """RGB (0–255) of BT.601 luma `luma` and chroma of magnitude `chroma` in direction `hue` of the CbCr plane."""
        cb, cr = chroma * math.cos(hue), chroma * math.sin(hue)
        return np.array([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb])

    def random_colour(self) -> np.ndarray:
        return self.colour(self.rng.uniform(70, 190), self.rng.uniform(0, 2 * math.pi), self.rng.uniform(20, 60))

    def order_colours(self) -> tuple[np.ndarray, np.ndarray]:
        """The order objects' black and white: no chroma, luma 15–35 and 220–240, beyond anything the other classes
        draw (their objects and every background stay within luma 45–205)."""
        return self.colour(self.rng.uniform(15, 35), 0.0, 0.0), self.colour(self.rng.uniform(220, 240), 0.0, 0.0)

    def gratings(self, waves: int = 3, wavelength=(5.0, 11.0)) -> list[tuple[float, float, float]]:
        """Random (angle, wavelength in px, phase) of `waves` sinusoidal gratings: a texture to evaluate later."""
        return [(self.rng.uniform(0, math.pi), self.rng.uniform(*wavelength) * self.scale,
                 self.rng.uniform(0, 2 * math.pi)) for _ in range(waves)]

    @staticmethod
    def texture(gratings, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The texture of `gratings` at object coordinates (u, v): smooth (band-limited), values in [0, 1]."""
        total = sum(np.cos(2 * math.pi * (u * math.cos(a) + v * math.sin(a)) / length + phase)
                    for a, length, phase in gratings)
        return 0.5 + 0.5 * np.tanh(1.5 * total)

    def disc(self, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
        """Anti-aliased coverage (0–1) of a disc of `radius` around the origin of (dx, dy)."""
        return np.clip(radius - np.hypot(dx, dy) + 0.5, 0.0, 1.0)

    def background(self) -> np.ndarray:
        """Static (size, size, 3): two dull colours blended by a low-frequency pattern, plus fine texture."""
        rng = self.rng
        low = self.colour(rng.uniform(60, 190), rng.uniform(0, 2 * math.pi), rng.uniform(0, 18))
        high = self.colour(rng.uniform(60, 190), rng.uniform(0, 2 * math.pi), rng.uniform(0, 18))
        blend = self.texture(self.gratings(2, (40.0, 90.0)), self.x, self.y)[..., None]
        fine = (self.texture(self.gratings(3, (4.0, 8.0)), self.x, self.y) - 0.5) * rng.uniform(10, 30)
        return low * (1 - blend) + high * blend + fine[..., None]

    # ---- the four kinds of object, each (colour (N, S, S, 3), coverage (N, S, S, 1)) ---------------
    def slide(self, direction: str, frames: int):
        rng, size = self.rng, self.size
        half = rng.uniform(8.0, 11.0) * self.scale
        sign = -1.0 if direction == "left" else 1.0
        speed = rng.uniform(2.5, 4.0) * self.scale
        x0, yc = rng.uniform(0, size), rng.uniform(half + 2, size - half - 2)
        c1, c2 = self.random_colour(), self.random_colour()
        gratings = self.gratings()
        colour, cover = [], []
        for t in range(frames):
            xc = x0 + sign * speed * t
            dx = np.mod(self.x - xc + size / 2, size) - size / 2  # the frame is a torus horizontally
            dy = self.y - yc
            texture = self.texture(gratings, dx, dy)[..., None]
            colour.append(c1 * (1 - texture) + c2 * texture)
            cover.append(np.clip(half - np.abs(dx) + 0.5, 0, 1) * np.clip(half - np.abs(dy) + 0.5, 0, 1))
        return np.stack(colour), np.stack(cover)[..., None]

    def rings(self, direction: str, frames: int):
        rng, size = self.rng, self.size
        radius = rng.uniform(15.0, 20.0) * self.scale
        xc, yc = (rng.uniform(radius + 1, size - radius - 1) for _ in range(2))
        wavelength = rng.uniform(8.0, 12.0) * self.scale
        speed = rng.uniform(0.2, 0.3) * wavelength  # px/frame, well under half a wavelength (no aliasing)
        sign = 1.0 if direction == "expand" else -1.0
        phase = rng.uniform(0, 2 * math.pi)
        c1, c2 = self.random_colour(), self.random_colour()
        r = np.hypot(self.x - xc, self.y - yc)
        cover = self.disc(self.x - xc, self.y - yc, radius)
        colour = []
        for t in range(frames):
            wave = 0.5 + 0.5 * np.cos(2 * math.pi * (r - sign * speed * t) / wavelength + phase)
            colour.append(c1 * (1 - wave[..., None]) + c2 * wave[..., None])
        return np.stack(colour), np.broadcast_to(cover[None, ..., None], (frames, size, size, 1))

    def spin(self, direction: str, frames: int):
        rng, size = self.rng, self.size
        radius = rng.uniform(15.0, 20.0) * self.scale
        xc, yc = (rng.uniform(radius + 1, size - radius - 1) for _ in range(2))
        rim_speed = rng.uniform(2.5, 4.0) * self.scale
        omega = rim_speed / radius  # rad/frame; the image y axis points down, so +angle is clockwise on screen
        sign = 1.0 if direction == "cw" else -1.0
        harmonics = [(k, rng.uniform(0.4, 1.0), rng.uniform(0, 2 * math.pi)) for k in rng.choice([3, 4, 5, 6], 2, replace=False)]
        radial_wavelength, radial_phase = rng.uniform(8.0, 14.0) * self.scale, rng.uniform(0, 2 * math.pi)
        c1, c2 = self.random_colour(), self.random_colour()
        dx, dy = self.x - xc, self.y - yc
        theta, r = np.arctan2(dy, dx), np.hypot(dx, dy)
        radial = 0.35 * np.cos(2 * math.pi * r / radial_wavelength + radial_phase)
        cover = self.disc(dx, dy, radius)
        colour = []
        for t in range(frames):
            angle = theta - sign * omega * t
            pattern = sum(a * np.cos(k * angle + p) for k, a, p in harmonics) + radial
            # fade the pattern near the centre, where its angular detail would be finer than a pixel
            wave = 0.5 + 0.5 * np.tanh(2.0 * pattern * np.clip(r / (3.0 * self.scale), 0, 1))
            colour.append(c1 * (1 - wave[..., None]) + c2 * wave[..., None])
        return np.stack(colour), np.broadcast_to(cover[None, ..., None], (frames, size, size, 1))

    def shuttle(self, variant: str, frames: int):
        """A diamond sliding right, resting, sliding back left, resting (the "right_left" variant); no wrapping.

        At the left rest the diamond is partly out of the frame (its centre a quarter to half of its half-width
        inside the left edge), at the right rest wholly inside, whatever the crop: what one frame shows of it
        tells which end of its path it is at, as the disc's size does for the pulse.
        """
        rng, size = self.rng, self.size
        half = rng.uniform(9.0, 12.0) * self.scale  # centre to corner
        x_left = rng.uniform(0.25, 0.5) * half
        travel = rng.uniform(26.0, 32.0) * self.scale
        yc = rng.uniform(half + 2, size - half - 2)
        c1, c2 = self.order_colours()
        gratings = self.gratings()
        colour, cover = [], []
        for phase in order_phase(frames):
            dx, dy = self.x - (x_left + travel * phase), self.y - yc
            texture = self.texture(gratings, dx, dy)[..., None]
            colour.append(c1 * (1 - texture) + c2 * texture)
            cover.append(np.clip(half - np.abs(dx) - np.abs(dy) + 0.5, 0, 1))
        return np.stack(colour), np.stack(cover)[..., None]

    def pulse(self, variant: str, frames: int):
        """A checkered disc growing, resting, shrinking back, resting (the "grow_shrink" variant); the checks zoom with it."""
        rng, size = self.rng, self.size
        small, large = rng.uniform(7.0, 9.0) * self.scale, rng.uniform(18.0, 21.0) * self.scale
        xc, yc = (rng.uniform(large + 1, size - large - 1) for _ in range(2))
        check = rng.uniform(4.0, 6.0) * self.scale  # check size at the large radius
        angle = rng.uniform(0, math.pi / 2)
        c1, c2 = self.order_colours()
        dx, dy = self.x - xc, self.y - yc
        u, v = dx * math.cos(angle) + dy * math.sin(angle), -dx * math.sin(angle) + dy * math.cos(angle)
        colour, cover = [], []
        for phase in order_phase(frames):
            radius = small + (large - small) * phase
            zoom = large / radius  # object coordinates: the pattern grows with the disc
            wave = np.sin(math.pi * u * zoom / check) * np.sin(math.pi * v * zoom / check)
            wave = 0.5 + 0.5 * np.tanh(3.0 * wave)
            colour.append(c1 * (1 - wave[..., None]) + c2 * wave[..., None])
            cover.append(self.disc(dx, dy, radius))
        return np.stack(colour), np.stack(cover)[..., None]

    def ball(self, colour_name: str, frames: int):
        rng, size = self.rng, self.size
        radius = rng.uniform(9.0, 12.0) * self.scale
        amplitude = rng.uniform(8.0, 14.0) * self.scale
        period = rng.uniform(10.0, 16.0)  # frames
        phase = rng.uniform(0, 2 * math.pi)
        xc = rng.uniform(radius + 1, size - radius - 1)
        y_mid = rng.uniform(radius + amplitude + 1, size - radius - amplitude - 1)
        hue = _BALL_HUES[f"ball_{colour_name}"] + rng.uniform(-0.25, 0.25)
        chroma = rng.uniform(40, 60)
        dark_luma = rng.uniform(70, 130)
        c1 = self.colour(dark_luma, hue, chroma)
        c2 = self.colour(dark_luma + rng.uniform(30, 50), hue, chroma)
        gratings = self.gratings(3, (6.0, 12.0))
        colour, cover = [], []
        for t in range(frames):
            yc = y_mid + amplitude * math.sin(2 * math.pi * t / period + phase)
            dx, dy = self.x - xc, self.y - yc
            texture = self.texture(gratings, dx, dy)
            shade = 1.0 - 0.25 * np.clip(np.hypot(dx, dy) / radius, 0, 1) ** 2  # a little roundness
            colour.append((c1 * (1 - texture[..., None]) + c2 * texture[..., None]) * shade[..., None])
            cover.append(self.disc(dx, dy, radius))
        return np.stack(colour), np.stack(cover)[..., None]


def _check_settings(videos_per_class: int, frames: int, size: int, test_fraction: float, fps: int) -> None:
    # size ≥ 48: at 32×32, libx264 was seen to encode the same frames differently from run to run (and
    # decode differently), which would break "same seed, same frames".
    for name, value, low in (("videos_per_class", videos_per_class, 2), ("frames", frames, 2), ("size", size, 48),
                             ("fps", fps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise MateffnetError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if size % 2:
        raise MateffnetError(f"size must be even (H.264 4:2:0 needs even sizes), got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise MateffnetError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")


def _manifest_head(settings: dict, classes=SYNTHETIC_CLASSES) -> dict:
    return {
        "dataset": "mateffnet synthetic actions",
        "settings": settings,
        "classes": [asdict(c) for c in classes],
        "horizontal_flip_swaps": HORIZONTAL_FLIP_SWAPS,
        "list_format": "one video a line: '<path relative to this folder> <label>', label = 0-based line of classes.txt",
    }


def _claim_folder(out_dir: Path, settings: dict, classes=SYNTHETIC_CLASSES) -> None:
    """Refuse a folder holding a dataset made with other settings; record ours before writing videos."""
    manifest = out_dir / MANIFEST_FILE
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text()).get("settings")
        except (json.JSONDecodeError, AttributeError) as error:
            raise MateffnetError(f"{manifest}: not a valid synthetic dataset manifest ({error})") from error
        if old != settings:
            changed = ", ".join(f"{k} {old.get(k)!r} → {v!r}" for k, v in settings.items() if (old or {}).get(k) != v)
            raise MateffnetError(f"{out_dir} holds a synthetic dataset made with other settings ({changed}); "
                                 "use another folder or delete it")
        return
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise MateffnetError(f"{out_dir} exists and is not empty (and holds no {MANIFEST_FILE}); use another folder")
    atomic_write_json(manifest, {**_manifest_head(settings, classes), "complete": False})


def _is_complete(path: Path, frames: int) -> bool:
    """A video from an earlier run that decodes to the expected number of frames."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        return len(read_video_frames(path)) == frames
    except MateffnetError:
        return False

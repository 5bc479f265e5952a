"""From annotation items and a store folder to uint8 clips: TSN sampling, decoding, crops and flips.

`VideoDataset` samples TSN segments from each video's packed file (or mmaction2/TSN rawframes
folder), crops and flips them. Training samples are (uint8 clip (T, C, S, S), label); test samples
are (uint8 views (V, T, C, S, S), label). C is 3 for RGB and 2·flow_length for flow (x0, y0, x1, y1,
…). Nothing is normalised: the model does that. `mateffnet.data.loader.make_loader` batches them.

Two ways to decode, same samples:

- in the DataLoader workers (`defer_decode=False`): workers decode JPEGs with libjpeg-turbo (and
  LZ4 flow), crop, flip, and hand over finished uint8 clips;
- on the device (`defer_decode=True`, for a GPU): workers only read the stored bytes and draw the
  sampling positions and crops; `decode_batch` decodes the whole batch in one call (nvJPEG for JPEG,
  nvCOMP for flow stored as LZ4 or zstd: `mateffnet.io.flowcodec.decode_flow_batch`) and crops/flips on
  the GPU. Workers then move ~0.5-1 MB per flow clip instead of ~8 MB, and the CPU does no pixel work.
  `decode_batch` runs on the CPU too (that is how it is tested here).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mateffnet.config import DEFAULT_BOUND, MODALITIES
from mateffnet.io.annotations import VideoItem, missing_summary
from mateffnet.io.flowcodec import NVCOMP_CODECS, decode_flow_batch, pack_blobs
from mateffnet.io.jpeg import decode_jpeg_list
from mateffnet.io.nvcomp import INSTALL_HINT, available as nvcomp_available
from mateffnet.io.rawframes import RawFrames
from mateffnet.data.sampling import clip_indices
from mateffnet.io.store import REDO_HINT, PackedVideo, StoreError, store_path
from mateffnet.data.transforms import TSN_SCALES, Crop, apply_crop, eval_crops, negate_flow_x, train_crop
from mateffnet.errors import MateffnetError

log = logging.getLogger("mateffnet")
DAMAGED_POLICIES = ("stop", "skip")
DAMAGED_LABEL = -2  # the label of a sample whose packed file is damaged, under damaged="skip"


def locate_video(root: str | os.PathLike, video_id: str) -> Path | None:
    """The packed file `<root>/<video_id>.mfv`, else a rawframes folder `<root>/<video_id>` or
    `<root>/<last part of video_id>` (mmaction2's flat layout); None if there is none."""
    packed = store_path(root, video_id)
    if packed.is_file():
        return packed
    for folder in (Path(root) / video_id, Path(root) / video_id.rsplit("/", 1)[-1]):
        if folder.is_dir():
            return folder
    return None


def open_video(path: Path, flow_bound: float = DEFAULT_BOUND) -> PackedVideo | RawFrames:
    return RawFrames(path, flow_bound) if path.is_dir() else PackedVideo(path)


@dataclasses.dataclass(frozen=True)
class SampleKey:
    """What a loader asks a dataset for: sample `index` as drawn in `epoch`, written into ring slot
    `slot` (`mateffnet.data.loader`; -1: returned). A DataLoader worker's copy of the dataset does
    not see `set_epoch` calls made after it started, so the epoch travels with the index."""

    index: int
    epoch: int
    slot: int = -1


@dataclasses.dataclass
class EncodedClip:
    """A sample before decoding: its stored images (RGB JPEGs, or flow planes in `codec`) and the crops to
    apply once decoded."""

    data: torch.Tensor  # uint8 (bytes,): the images as `flowcodec.pack_blobs` packs them
    lengths: torch.Tensor  # int64 (images,)
    crops: torch.Tensor  # int64 (views, 5): top, left, height, width, flip
    label: int
    flow: bool
    num_segments: int
    size: int
    views: bool  # test sample: decodes to (V, T, C, S, S)
    codec: str  # "jpeg" for RGB frames
    shape: tuple[int, int]  # (height, width) of the stored images


@dataclasses.dataclass
class EncodedBatch:
    data: torch.Tensor
    lengths: torch.Tensor
    images_per_sample: int
    crops: torch.Tensor  # (B, views, 5)
    labels: torch.Tensor  # (B,)
    flow: bool
    num_segments: int
    size: int
    views: bool
    codec: str
    shapes: list[tuple[int, int]]  # per sample

    def pin_memory(self) -> "EncodedBatch":
        return dataclasses.replace(self, data=self.data.pin_memory())


def collate_encoded_clips(samples: Sequence[EncodedClip]) -> EncodedBatch:
    first = samples[0]
    counts = {len(s.lengths) for s in samples}
    if len(counts) != 1:
        raise ValueError(f"samples of one batch have different image counts: {sorted(counts)}")
    codecs = {s.codec for s in samples}
    if len(codecs) != 1:
        raise MateffnetError(f"samples of one batch are stored in different flow codecs: {', '.join(sorted(codecs))}")
    return EncodedBatch(
        data=torch.cat([s.data for s in samples]),
        lengths=torch.cat([s.lengths for s in samples]),
        images_per_sample=counts.pop(),
        crops=torch.stack([s.crops for s in samples]),
        labels=torch.tensor([s.label for s in samples], dtype=torch.long),
        flow=first.flow,
        num_segments=first.num_segments,
        size=first.size,
        views=first.views,
        codec=first.codec,
        shapes=[s.shape for s in samples],
    )


def decode_batch(batch: EncodedBatch, device: str | torch.device = "cuda") -> torch.Tensor:
    """Decode a deferred batch on `device` (one nvJPEG or nvCOMP call for the whole batch on CUDA) and crop
    and flip there → uint8 (B, T, C, S, S), or (B, V, T, C, S, S) for test views."""
    if batch.flow:
        stacks = decode_flow_batch(batch.data, batch.lengths, batch.codec, batch.shapes, device)
    else:
        images = decode_jpeg_list(list(torch.split(batch.data, batch.lengths.tolist())), gray=False, device=device)
        per = batch.images_per_sample
        stacks = [torch.stack(images[b * per : (b + 1) * per]) for b in range(len(batch.shapes))]
    clips = []
    for stack, crops in zip(stacks, batch.crops.tolist()):
        clip = stack.view(batch.num_segments, -1, *stack.shape[-2:])  # (T, C, H, W)
        views = [apply_crop(clip, Crop(t, l, h, w, bool(f)), batch.size, batch.flow) for t, l, h, w, f in crops]
        clips.append(torch.stack(views) if batch.views else views[0])
    return torch.stack(clips)


class VideoDataset(torch.utils.data.Dataset):
    """TSN-sampled clips of `items` from the packed files (or rawframes folders) under `root`.

    modality: "rgb" or "flow"; num_segments: T (8 to train, 25 to test as TSN); flow_length: L;
    train: random positions, random crop (`train_crop` "random" as the paper or "multiscale" as
    TSN) and flip, else centred positions and `num_crops` test crops (1, 3 or 10);
    input_size: S, from the model config; scales: the multi-scale crop's fractions of the short side;
    defer_decode: decode on the device (`decode_batch`): True, False, or "auto" = only flow stored in an nvCOMP codec
    (`flowcodec.NVCOMP_CODECS`) where nvCOMP is installed;
    seed: with `set_epoch`, makes every training sample a function of (seed, epoch, index). Items whose
    video is not in `root` are left out with one summary line in the log (`self.missing`).
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        root: str | os.PathLike,
        modality: str,
        num_segments: int = 8,
        flow_length: int = 10,
        train: bool = True,
        input_size: int = 224,
        train_crop: str = "random",
        flip: bool = True,
        num_crops: int = 1,
        defer_decode: bool | str = False,
        flow_bound: float = DEFAULT_BOUND,
        scales: Sequence[float] = TSN_SCALES,
        seed: int = 0,
        damaged: str = "stop",
    ):
        if modality not in MODALITIES:
            raise MateffnetError(f"unknown modality {modality!r}; expected 'rgb' or 'flow'")
        if train_crop not in ("random", "multiscale"):
            raise MateffnetError(f"unknown training crop {train_crop!r}; expected 'random' or 'multiscale'")
        if num_crops not in (1, 3, 10):
            raise MateffnetError(f"number of test crops must be 1, 3 or 10, got {num_crops}")
        if damaged not in DAMAGED_POLICIES or (damaged == "skip" and (train or defer_decode is True)):
            raise MateffnetError(f"damaged={damaged!r}: expected 'stop', or 'skip' for test sets decoded by the workers")
        self.damaged = damaged
        self.root = Path(root)
        self.modality, self.num_segments, self.flow_length = modality, num_segments, flow_length
        self.train, self.input_size, self.train_crop, self.flip = train, input_size, train_crop, flip
        self.num_crops, self.defer_decode, self.flow_bound = num_crops, defer_decode, flow_bound
        self.scales, self.seed, self.epoch = tuple(scales), seed, 0
        self.items: list[VideoItem] = []
        self.paths: list[Path] = []
        self.missing: list[VideoItem] = []
        for item in items:
            path = locate_video(self.root, item.video_id)
            if path is None:
                self.missing.append(item)
            else:
                self.items.append(item)
                self.paths.append(path)
        if self.missing:
            log.warning("%s (not prepared in %s)", missing_summary(self.missing, len(items)), self.root)
        self.flow_codec = "jpeg"  # of the first video's flow; "jpeg" for RGB
        if modality == "flow" and self.paths:
            self.flow_codec = open_video(self.paths[0], flow_bound).flow_codec or "jpeg"
            if defer_decode and self.flow_codec != "jpeg" and not nvcomp_available():
                log.info("flow stored as %s in %s: decoded by the loader workers (GPU decoding needs nvCOMP: %s)",
                         self.flow_codec, self.root, INSTALL_HINT)
                self.defer_decode = False
        if defer_decode == "auto":
            self.defer_decode = self.flow_codec in NVCOMP_CODECS and nvcomp_available() and damaged == "stop"
        if train and any(item.label < 0 for item in self.items):
            unlabelled = next(item for item in self.items if item.label < 0)
            raise MateffnetError(f"video {unlabelled.video_id} has no label; training needs labelled videos")

    @property
    def channels(self) -> int:
        return 3 if self.modality == "rgb" else 2 * self.flow_length

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Training randomness is drawn from (seed, epoch, index), so a sample does not depend on which
        worker or process loads it: resumed and multi-GPU runs see exactly the samples of a plain run."""
        self.epoch = epoch

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of a decoded sample: (T, C, S, S) to train, (V, T, C, S, S) to test."""
        clip = (self.num_segments, self.channels, self.input_size, self.input_size)
        return clip if self.train else (self.num_crops, *clip)

    def _generator(self, index: int, epoch: int) -> torch.Generator | None:
        if not self.train:
            return None
        mixed = (self.seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index) % (2**63 - 1)
        return torch.Generator().manual_seed(mixed)

    def __getitem__(self, key: int | SampleKey):
        return self.write(key)

    def write(self, key: int | SampleKey, out: torch.Tensor | None = None):
        """Sample `key` as (clip, label), the clip written into `out` (uint8, `sample_shape`) if given.
        A damaged packed file is a StoreError naming the file, the video and the fix; with damaged="skip"
        its sample is blank with label DAMAGED_LABEL, for the evaluator to leave out and count."""
        try:
            return self._write(key, out)
        except StoreError as error:
            index = key.index if isinstance(key, SampleKey) else key
            if self.damaged == "skip":
                log.warning("%s (video %s): left out", error, self.items[index].video_id)
                blank = torch.zeros(self.sample_shape, dtype=torch.uint8)
                return (blank if out is None else out.copy_(blank)), DAMAGED_LABEL
            detail = f"(video {self.items[index].video_id}); {REDO_HINT}"
            if error.problem is None:
                raise StoreError(f"{error} {detail}") from None
            raise StoreError(error.path, f"{error.problem} {detail}") from None

    def _write(self, key: int | SampleKey, out: torch.Tensor | None = None):
        index, epoch = (key.index, key.epoch) if isinstance(key, SampleKey) else (key, self.epoch)
        item, video = self.items[index], open_video(self.paths[index], self.flow_bound)
        generator = self._generator(index, epoch)
        positions = clip_indices(
            self.modality, video.num_frames, video.num_flows, self.num_segments, self.flow_length, self.train,
            generator,
        ).flatten().tolist()
        crops = self._crops(video.height, video.width, generator)
        flow = self.modality == "flow"
        if self.defer_decode:
            codec = (video.flow_codec or "jpeg") if flow else "jpeg"
            if codec != self.flow_codec:
                raise MateffnetError(f"{video.path}: flow stored as {codec}, not {self.flow_codec}, in a store of "
                                     f"{self.flow_codec} flow (prepared with different --flow-codec?); GPU decoding "
                                     "needs one codec per store")
            data, lengths = pack_blobs(video.flow_blobs(positions) if flow else video.rgb_jpegs(positions), codec)
            return EncodedClip(
                data=data,
                lengths=lengths,
                crops=torch.tensor([[c.top, c.left, c.height, c.width, int(c.flip)] for c in crops], dtype=torch.long),
                label=item.label,
                flow=flow,
                num_segments=self.num_segments,
                size=self.input_size,
                views=not self.train,
                codec=codec,
                shape=(video.height, video.width),
            )
        if self.train:
            return self._training_clip(video, positions, crops[0], out), item.label
        images = video.read_flow(positions) if flow else video.read_rgb(positions)
        clip = images.view(self.num_segments, -1, video.height, video.width)
        views = torch.stack([apply_crop(clip, crop, self.input_size, flow) for crop in crops])
        return (views if out is None else out.copy_(views)), item.label

    def _training_clip(self, video, positions: list[int], crop: Crop, out: torch.Tensor | None) -> torch.Tensor:
        """Decode only the crop's region of each image, straight into the clip (into `out` if given).
        A crop of the input size is mirrored while it is copied out of the decoder; a crop that needs
        resizing is resized first and flipped after, as `apply_crop` (and the GPU path) does."""
        flow = self.modality == "flow"
        region = (crop.top, crop.left, crop.height, crop.width)
        exact = crop.height == crop.width == self.input_size
        target = None if out is None or not exact else out.view(-1, 2 if flow else 3, *out.shape[-2:])
        read = video.read_flow if flow else video.read_rgb
        images = read(positions, region, mirror=exact and crop.flip, out=target)
        clip = images.view(self.num_segments, -1, crop.height, crop.width)
        if exact:
            if crop.flip and flow:
                negate_flow_x(clip)
            return clip
        clip = apply_crop(clip, dataclasses.replace(crop, top=0, left=0), self.input_size, flow)
        return clip if out is None else out.copy_(clip)

    def _crops(self, height: int, width: int, generator: torch.Generator | None) -> list[Crop]:
        if self.train:
            return [train_crop(height, width, self.input_size, self.train_crop, self.flip, generator, self.scales)]
        return eval_crops(height, width, self.input_size, self.num_crops)

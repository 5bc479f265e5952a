"""Everything between a folder of videos and a batch of uint8 clips on the training device.

    video file ─ decode ─ resize ─ optical flow ─ packed file (prepare)   [once per dataset]
    packed file / rawframes ─ TSN sampling ─ crop/flip ─ batch (VideoDataset, make_loader)

Modules: `decode` (PyAV), `annotations` (UCF101, HMDB51, Kinetics-400, lists, folders), `store`
(the packed per-video file), `rawframes` (mmaction2/TSN frame folders), `prepare` (the
dataset-scale job behind `mateffnet prepare`), `sampling`, `transforms`, `jpeg`, `flowcodec`, `dataset`,
`loader`.
"""

from mateffnet.data.annotations import Annotations, VideoItem, load_annotations, split_missing
from mateffnet.data.dataset import VideoDataset, decode_batch
from mateffnet.data.decode import VideoDecodeError, VideoReader, read_video
from mateffnet.data.loader import make_loader
from mateffnet.data.prepare import PrepareOptions, PrepareReport, prepare_dataset, prepare_videos
from mateffnet.data.rawframes import RawFrames, pack_rawframes
from mateffnet.data.store import PackedVideo, PackedVideoWriter, StoreError, store_path

__all__ = [
    "Annotations",
    "PackedVideo",
    "PackedVideoWriter",
    "PrepareOptions",
    "PrepareReport",
    "RawFrames",
    "StoreError",
    "VideoDataset",
    "VideoDecodeError",
    "VideoItem",
    "VideoReader",
    "decode_batch",
    "load_annotations",
    "make_loader",
    "pack_rawframes",
    "prepare_dataset",
    "prepare_videos",
    "read_video",
    "split_missing",
    "store_path",
]

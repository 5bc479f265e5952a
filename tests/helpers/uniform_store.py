"""Packed videos of uniform images whose values say which frame or flow they are (for sampling tests)."""

from pathlib import Path

import torch

from mateffnet.io.annotations import VideoItem
from mateffnet.io.flowcodec import encode_flow_planes
from mateffnet.io.jpeg import encode_jpegs
from mateffnet.io.store import PackedVideoWriter, store_path

H, W = 48, 64


def rgb_value(i):
    return 10 + 10 * i


def flow_values(k):
    return 50 + 5 * k, 200 - 5 * k


def write_uniform_video(store, video_id, frames, flow_codec="jpeg"):
    """A packed video whose frame i is uniformly rgb_value(i) and flow k is uniformly flow_values(k)."""
    rgb = torch.stack([torch.full((3, H, W), rgb_value(i), dtype=torch.uint8) for i in range(frames)])
    flow = torch.stack([torch.tensor(flow_values(k), dtype=torch.uint8).view(2, 1, 1).expand(2, H, W) for k in range(frames - 1)])
    flow_jpegs = encode_flow_planes(flow.reshape(-1, H, W), flow_codec, 95)
    with PackedVideoWriter(store_path(store, video_id)) as writer:
        for i, blob in enumerate(encode_jpegs(rgb, 95)):
            writer.add_rgb(i, blob)
        for k in range(frames - 1):
            writer.add_flow(k, flow_jpegs[2 * k], flow_jpegs[2 * k + 1])
        writer.finish({"width": W, "height": H, "flow": {"method": "test", "bound": 20.0, "codec": flow_codec}})


ITEMS = [VideoItem("a/long", Path("a/long.avi"), 3), VideoItem("b/short", Path("b/short.avi"), 1)]


def frame_numbers(clip):
    """Frame index of each RGB segment, read back from the uniform pixel values."""
    return [round((v - 10) / 10) for v in clip.float().mean(dim=(1, 2, 3)).tolist()]


def write_store(root):
    """The two videos of ITEMS: a/long (20 frames) and b/short (5 frames)."""
    write_uniform_video(root, "a/long", 20)
    write_uniform_video(root, "b/short", 5)
    return root

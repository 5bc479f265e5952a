"""JPEG decoding and encoding on the CPU: torchvision's codecs (deprecated in 0.29) beside Pillow's, on the
same planes. io/jpeg.py decodes with torchvision (Pillow where torchvision lacks it) and encodes with Pillow.

    python benchmarks/jpeg_codecs.py [--frames 100] [--repeats 3]

The planes are a real UCF101 clip's frames at 340x256 (../shared/data; a smooth random texture
without it): RGB JPEGs at RGB_QUALITY and 1-channel flow-like planes (the frames' gray level) at
FLOW_QUALITY, as packed stores hold them, handed to the encoders as prepare does (views of the decoder's
(N, H, W, C) frames: torchvision's encoder needs a (C, H, W) copy of each). One thread, best of `repeats`.
Also prints whether both decoders give the same bytes identical pixels, and whether both encoders write
identical bytes.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torchvision.io

from mateffnet.config import FLOW_QUALITY, RGB_QUALITY
from mateffnet.io import jpeg
from mateffnet.io.decode import read_video

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/videos/ucf101/Archery/v_Archery_g01_c01.avi"


def planes(frames: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if CLIP.is_file():
        video, _ = read_video(CLIP, size=(340, 256), max_frames=frames)
        rgb, source = torch.from_numpy(video).permute(0, 3, 1, 2).contiguous(), CLIP.name
    else:
        g = torch.Generator().manual_seed(0)
        noise = torch.rand(frames, 3, 64, 85, generator=g) * 255
        rgb = torch.nn.functional.interpolate(noise, size=(256, 340), mode="bilinear").round().to(torch.uint8)
        source = "random texture"
    gray = rgb.float().mean(1, keepdim=True).round().to(torch.uint8)
    return rgb, gray, source


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rgb, gray, source = planes(args.frames)
    decode, encode = torchvision.io.decode_jpeg, torchvision.io.encode_jpeg
    print(f"{len(rgb)} planes of {source} at 340x256, 1 thread, {platform.processor() or platform.machine()}, "
          f"torchvision {torchvision.__version__}, Pillow {jpeg.Image.__version__}")
    print(f"{'work':28s} {'torchvision':>14s} {'Pillow':>14s} {'tv/Pillow':>10s}  identical pixels / bytes")
    for name, images, quality in (("RGB", rgb, RGB_QUALITY), ("flow plane", gray, FLOW_QUALITY)):
        frames = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # the decoder's layout
        blobs = [jpeg.as_tensor(b) for b in jpeg.encode_jpegs(frames, quality)]
        is_gray = images.shape[1] == 1
        times, decoded = {}, {}
        for codec in ("torchvision", "pillow"):
            if codec == "pillow":
                del torchvision.io.decode_jpeg, torchvision.io.encode_jpeg
            try:
                times[codec, "decode"] = best_time(lambda: jpeg.decode_jpegs(blobs, gray=is_gray), args.repeats)
                decoded[codec] = jpeg.decode_jpegs(blobs, gray=is_gray)
            finally:
                torchvision.io.decode_jpeg, torchvision.io.encode_jpeg = decode, encode
        times["torchvision", "encode"] = best_time(lambda: encode([f.contiguous() for f in frames], quality=quality),
                                                   args.repeats)
        times["pillow", "encode"] = best_time(lambda: jpeg.encode_jpegs(frames, quality), args.repeats)
        same = {"decode": torch.equal(decoded["torchvision"], decoded["pillow"]),
                "encode": [bytes(b.numpy()) for b in encode([f.contiguous() for f in frames], quality=quality)]
                == jpeg.encode_jpegs(frames, quality)}
        for work in ("decode", "encode"):
            tv, pil = (len(images) / times[codec, work] for codec in ("torchvision", "pillow"))
            print(f"{name + ' ' + work + f' (q{quality})':28s} {tv:10.0f} /s {pil:10.0f} /s {tv / pil:9.2f}x"
                  f"  {'yes' if same[work] else 'NO'}")

if __name__ == "__main__":
    main()

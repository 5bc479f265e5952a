import json

import numpy as np
import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.flow import TVL1_FAST
from mateffnet.commands.flow import _decode_rgb, write_flow_images

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory):
    """7 frames of 96x64 texture moving 2 px right per frame (mpeg4, high quality)."""
    path = tmp_path_factory.mktemp("video") / "moving.avi"
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 64, 140, generator=g) * 255, 7, 1, 3)[0, 0]
    texture = ((texture - texture.min()) / (texture.max() - texture.min()) * 255).round().to(torch.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"qscale": "1"}
        for k in range(7):
            crop = texture[:, 20 - 2 * k : 116 - 2 * k].numpy()
            frame = av.VideoFrame.from_ndarray(np.repeat(crop[:, :, None], 3, axis=2), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_the_flow_commands_reader_decodes_the_non_utf8_clip_under_pyav19s_open(shared_data, pyav19_open):
    clip = shared_data / "videos/hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
    frames = list(_decode_rgb(clip))
    assert len(frames) == 83 and frames[0].shape == (240, 320, 3)


def test_writes_tsn_named_jpegs_and_the_bound_and_resumes(moving_video, tmp_path):
    out = tmp_path / "flow"
    summary = write_flow_images(moving_video, out, method="tvl1", device="cpu", bound=10.0, batch_size=4,
                                params=dict(TVL1_FAST), progress=False)
    assert summary.pairs == summary.computed == 6
    for k in range(1, 7):
        for name in (f"flow_x_{k:05d}.jpg", f"flow_y_{k:05d}.jpg", f"color_{k:05d}.jpg"):
            assert (out / name).is_file(), name
    assert not (out / "flow_x_00007.jpg").exists() and not (out / "flow_x_00000.jpg").exists()
    meta = json.loads((out / "flow.json").read_text())
    assert meta["bound"] == 10.0 and meta["pairs"] == 6 and meta["method"] == "tvl1"

    from PIL import Image

    x = np.asarray(Image.open(out / "flow_x_00003.jpg"), dtype=np.float32)[16:-16, 16:-16]
    y = np.asarray(Image.open(out / "flow_y_00003.jpg"), dtype=np.float32)[16:-16, 16:-16]
    # 2 px to the right with bound 10: 255 · 12 / 20 = 153; no vertical motion: 128
    assert abs(np.median(x) - 153) <= 3 and abs(np.median(y) - 128) <= 3
    assert np.asarray(Image.open(out / "color_00003.jpg")).shape == (64, 96, 3)

    again = write_flow_images(moving_video, out, method="tvl1", device="cpu", bound=10.0, batch_size=4,
                              params=dict(TVL1_FAST), progress=False)
    assert again.pairs == 6 and again.computed == 0


def test_cli_flow_prints_a_summary_and_reports_bad_input_in_one_line(moving_video, tmp_path, capsys):
    pytest.importorskip("cv2")
    from mateffnet.cli import main

    assert main(["flow", str(moving_video), "--out", str(tmp_path / "fb"), "--method", "farneback"]) == 0
    assert "6 flow fields" in capsys.readouterr().out
    assert main(["flow", str(tmp_path / "missing.avi"), "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "missing.avi does not exist" in error and "\n" not in error


def test_bad_parameters_are_reported(moving_video, tmp_path):
    with pytest.raises(MateffnetError, match="bound"):
        write_flow_images(moving_video, tmp_path, bound=0, progress=False)
    with pytest.raises(MateffnetError, match="device"):
        write_flow_images(moving_video, tmp_path, device="tpu", progress=False)


def test_decodes_hmdb51_clip_with_invalid_metadata(shared_data):
    clip = shared_data / "videos/hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
    frame = next(_decode_rgb(clip))
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8

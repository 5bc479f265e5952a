import pytest
import torch

from mateffnet.flow import compute_flow

pytest.importorskip("cv2", reason="Farneback needs OpenCV (pip install 'mateffnet[opencv]')")


def test_farneback_recovers_a_translation():
    torch.manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 96) * 255, 5, 1, 2)[0, 0]
    frame0 = texture[8:72, 8:72]
    frame1 = texture[8:72, 5:69]  # content moves 3 px to the right
    flow = compute_flow(frame0[None], frame1[None], method="farneback")
    assert flow.shape == (1, 2, 64, 64)
    inner = flow[0, :, 16:-16, 16:-16]
    assert inner[0].median().item() == pytest.approx(3.0, abs=0.3)
    assert inner[1].median().item() == pytest.approx(0.0, abs=0.3)

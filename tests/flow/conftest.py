from pathlib import Path

import numpy as np
import pytest
import torch

KINETICS_DEMO = Path("videos/kinetics400/arm_wrestling/demo.mp4")
RAWFRAMES = Path("rawframes/v_ApplyEyeMakeup_g01_c01")


@pytest.fixture(scope="session")
def demo_gray_frames(shared_data) -> list[torch.Tensor]:
    """Every 10th frame of the real Kinetics demo clip (340x256), grayscale uint8 (H, W)."""
    try:
        import av
    except ImportError:  # the GPU machine has OpenCV but not PyAV
        cv2 = pytest.importorskip("cv2")
        capture = cv2.VideoCapture(str(shared_data / KINETICS_DEMO))
        gray = (cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2GRAY) for _ in range(60))
    else:
        container = av.open(str(shared_data / KINETICS_DEMO))
        gray = (frame.to_ndarray(format="gray", threads=1) for frame in container.decode(video=0))
    frames = []
    for index, image in enumerate(gray):
        if index % 10 == 0:
            frames.append(torch.from_numpy(np.ascontiguousarray(image)))
        if len(frames) == 6:
            break
    return frames


@pytest.fixture(scope="session")
def opencv_tvl1():
    """cv2.optflow.DualTVL1OpticalFlow, called with our parameter names: (frame0, frame1, **params) → (2, H, W)."""
    cv2 = pytest.importorskip("cv2", reason="the OpenCV reference needs opencv-contrib-python-headless")
    if not hasattr(cv2, "optflow"):
        pytest.skip("OpenCV TV-L1 needs opencv-contrib-python(-headless), not plain opencv-python")
    return _opencv_tvl1


def _opencv_tvl1(frame0: torch.Tensor, frame1: torch.Tensor, **params) -> torch.Tensor:
    import cv2

    names = {
        "tau": "Tau", "lambda_": "Lambda", "theta": "Theta", "nscales": "ScalesNumber",
        "warps": "WarpingsNumber", "epsilon": "Epsilon", "inner_iterations": "InnerIterations",
        "outer_iterations": "OuterIterations", "scale_step": "ScaleStep", "gamma": "Gamma",
        "median_filtering": "MedianFiltering",
    }
    solver = cv2.optflow.DualTVL1OpticalFlow_create()
    for name, value in params.items():
        getattr(solver, "set" + names[name])(value)
    flow = solver.calc(frame0.numpy(), frame1.numpy(), None)
    return torch.from_numpy(flow).permute(2, 0, 1)

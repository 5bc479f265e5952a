import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.flow import compute_flow, quantize_flow
from mateffnet.flow.tvl1 import tvl1
from tests.helpers import flows as synthetic
from mateffnet.flow.tvl1 import centered_gradient, divergence, forward_gradient, median_filter, pyramid_sizes

SRC = Path(__file__).resolve().parents[2] / "src"


def _crop(frame: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (frame.shape[0] - height) // 2, (frame.shape[1] - width) // 2
    return frame[top : top + height, left : left + width].contiguous()


def _suite(frames, height, width):
    """The synthetic accuracy suite on centre crops of real frames: [(name, frame0, frame1, truth, valid)]."""
    cases = []
    for index, (name, truth) in enumerate(synthetic.standard_cases(height, width).items()):
        frame0, frame1, valid = synthetic.make_pair(_crop(frames[index + 1], height, width), truth)
        cases.append((name, frame0, frame1, truth, valid))
    return cases


def _compare_with_opencv(cases, opencv_tvl1, **params):
    ours = tvl1(torch.stack([c[1] for c in cases]), torch.stack([c[2] for c in cases]), backend="torch", **params)
    rows = []
    for i, (name, frame0, frame1, truth, valid) in enumerate(cases):
        reference = opencv_tvl1(frame0, frame1, **params)
        rows.append((name, synthetic.endpoint_error(ours[i], truth, valid), synthetic.endpoint_error(reference, truth, valid)))
    return rows


@pytest.mark.parametrize(
    "params",
    [{}, {"epsilon": 0.0, "inner_iterations": 30, "outer_iterations": 1}],
    ids=["opencv-defaults", "fixed-30-iterations"],
)
def test_accuracy_on_known_motion_matches_opencv_with_the_same_parameters(demo_gray_frames, opencv_tvl1, params):
    rows = _compare_with_opencv(_suite(demo_gray_frames, 96, 128), opencv_tvl1, **params)
    ours = sum(r[1] for r in rows) / len(rows)
    theirs = sum(r[2] for r in rows) / len(rows)
    assert ours <= 1.1 * theirs, rows
    for name, our_epe, their_epe in rows:
        assert our_epe < 0.3, (name, rows)  # every case is actually solved (sub-0.3 px), by both
        assert their_epe < 0.3, (name, rows)
        # Per case the only difference left is the border (OpenCV's warp reads zeros outside the
        # image, ours replicates the edge), which changes when the epsilon rule stops: small cases
        # may differ either way by a few hundredths of a pixel.
        assert our_epe <= 1.3 * their_epe + 0.01, (name, rows)


def test_accuracy_at_340x256_matches_opencv(demo_gray_frames, opencv_tvl1):
    rows = _compare_with_opencv(_suite(demo_gray_frames, 256, 340), opencv_tvl1)
    assert sum(r[1] for r in rows) <= 1.1 * sum(r[2] for r in rows), rows


def test_iterations_equal_opencvs_to_float_rounding_on_one_scale(demo_gray_frames, opencv_tvl1):
    # One scale, one warp, no median: only the primal-dual iterations and the epsilon rule are left.
    name, frame0, frame1, truth, valid = _suite(demo_gray_frames, 64, 96)[4]
    params = {"nscales": 1, "warps": 1, "median_filtering": 1, "inner_iterations": 40, "outer_iterations": 2}
    ours = tvl1(frame0[None], frame1[None], backend="torch", **params)[0]
    reference = opencv_tvl1(frame0, frame1, **params)
    assert (ours - reference).abs().max() < 2e-3
    assert (ours - reference).abs().mean() < 1e-4


@pytest.mark.parametrize(
    "params, slack",
    [
        ({"epsilon": 0.0, "inner_iterations": 30, "outer_iterations": 1}, 0.0),
        # With the epsilon rule the two stop at different iterations (see the border note above);
        # on this pair that leaves ours 0.006 units (0.1 %) further from the shipped flow than
        # OpenCV, while the two differ from each other by 0.13 units and both from the shipped
        # flow by 6.3 (more than zero flow does, 4.7: those JPEGs were not made from these frames
        # as decoded here). BENCHMARKS.md has the numbers.
        ({}, 0.05),
    ],
    ids=["fixed-30-iterations", "opencv-defaults"],
)
def test_not_worse_than_opencv_against_the_fields_shipped_flow(shared_data, opencv_tvl1, params, slack):
    cv2 = pytest.importorskip("cv2")
    folder = shared_data / "rawframes" / "v_ApplyEyeMakeup_g01_c01"
    bgr = [cv2.imread(str(folder / f"img_0000{i}.jpg")) for i in (1, 2)]
    gray = [torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) for image in bgr]
    shipped = torch.stack([torch.from_numpy(cv2.imread(str(folder / f"{axis}_00001.jpg"), 0)) for axis in "xy"])
    ours = quantize_flow(tvl1(gray[0][None], gray[1][None], **params)[0])
    reference = quantize_flow(opencv_tvl1(gray[0], gray[1], **params))
    ours_mad = (ours.float() - shipped.float()).abs().mean()
    opencv_mad = (reference.float() - shipped.float()).abs().mean()
    assert ours_mad <= opencv_mad + slack, (float(ours_mad), float(opencv_mad))
    assert (ours.float() - reference.float()).abs().mean() < 0.3  # and the two agree with each other


def test_batched_pairs_give_the_same_flow_as_one_pair_at_a_time(demo_gray_frames):
    # Pairs that converge at different iterations: each must still stop by its own epsilon rule.
    cases = _suite(demo_gray_frames, 48, 64)
    frames0 = torch.stack([cases[0][1], cases[2][1], cases[2][2]])
    frames1 = torch.stack([cases[0][2], cases[2][2], cases[2][2]])  # the last pair does not move
    params = {"nscales": 3, "warps": 2, "inner_iterations": 10, "outer_iterations": 3}
    batched = tvl1(frames0, frames1, **params)
    for i in range(3):
        single = tvl1(frames0[i : i + 1], frames1[i : i + 1], **params)
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)
    assert batched[2].abs().max() < 1e-3


def test_rgb_frames_are_converted_with_opencvs_gray_weights():
    torch.manual_seed(0)
    rgb = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    gray = 0.299 * rgb[:, 0].float() + 0.587 * rgb[:, 1].float() + 0.114 * rgb[:, 2].float()
    params = {"nscales": 2, "warps": 1, "inner_iterations": 5, "outer_iterations": 1}
    torch.testing.assert_close(tvl1(rgb[:1], rgb[1:], **params), tvl1(gray[:1], gray[1:], **params))


def test_compute_flow_switch_defaults_to_tvl1():
    torch.manual_seed(0)
    frames = torch.rand(2, 32, 40) * 255
    params = {"nscales": 2, "warps": 1, "inner_iterations": 4, "outer_iterations": 1}
    torch.testing.assert_close(compute_flow(frames[:1], frames[1:], **params), tvl1(frames[:1], frames[1:], **params))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9)), "differ in shape"),
        (lambda: tvl1(torch.zeros(8, 8), torch.zeros(8, 8)), "expected (N, H, W)"),
        (lambda: tvl1(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)), "expected (N, H, W)"),
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), lamda=0.1), "unknown TV-L1 parameter"),
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), scale_step=1.5), "scale_step=1.5"),
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), median_filtering=7), "median_filtering=7"),
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), backend="cuda"), "backend 'cuda'"),
        (lambda: tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), initial_flow=torch.zeros(1, 2, 8, 7)), "initial_flow"),
        (lambda: compute_flow(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), method="lucas-kanade"), "unknown flow method"),
    ],
)
def test_bad_input_gives_a_one_line_error(call, message):
    with pytest.raises(MateffnetError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_triton_backend_needs_cuda_or_the_interpreter():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter runs Triton on the CPU")
    with pytest.raises(MateffnetError, match="backend 'triton'"):
        tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), backend="triton")


def test_initial_flow_is_where_the_iterations_start(demo_gray_frames):
    name, frame0, frame1, truth, valid = _suite(demo_gray_frames, 48, 64)[1]
    params = {"nscales": 1, "warps": 1, "inner_iterations": 1, "outer_iterations": 1, "median_filtering": 1}
    from_truth = tvl1(frame0[None], frame1[None], initial_flow=truth[None], **params)[0]
    from_zero = tvl1(frame0[None], frame1[None], **params)[0]
    assert synthetic.endpoint_error(from_truth, truth, valid) < 0.2
    assert synthetic.endpoint_error(from_zero, truth, valid) > 1.0  # the motion is 1.7 px


def test_gamma_illumination_term_runs_like_opencv(demo_gray_frames, opencv_tvl1):
    name, frame0, frame1, truth, valid = _suite(demo_gray_frames, 48, 64)[4]
    params = {"gamma": 0.1, "nscales": 1, "warps": 1, "median_filtering": 1, "inner_iterations": 20, "outer_iterations": 1}
    ours = tvl1(frame0[None], frame1[None], **params)[0]
    assert (ours - opencv_tvl1(frame0, frame1, **params)).abs().max() < 2e-3


def test_pyramid_sizes_follow_opencv():
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    image = np.zeros((256, 340), np.float32)
    sizes = [(256, 340)]
    for _ in range(4):
        image = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        sizes.append(image.shape)
    assert pyramid_sizes(256, 340, 5, 0.8) == sizes
    assert pyramid_sizes(40, 40, 5, 0.5) == [(40, 40), (20, 20)]  # stops before 16 px


def test_median_filter_equals_opencvs_median_blur():
    cv2 = pytest.importorskip("cv2")
    torch.manual_seed(0)
    flow = torch.randn(3, 23, 31) * 4
    for size in (3, 5):
        expected = torch.stack([torch.from_numpy(cv2.medianBlur(plane.numpy(), size)) for plane in flow])
        torch.testing.assert_close(median_filter(flow, size), expected, atol=0, rtol=0)


def test_difference_operators_follow_opencvs_boundary_rules():
    torch.manual_seed(0)
    u = torch.randn(2, 5, 6)
    gx, gy = forward_gradient(u)
    assert torch.equal(gx[:, :, -1], torch.zeros(2, 5)) and torch.equal(gy[:, -1], torch.zeros(2, 6))
    torch.testing.assert_close(gx[:, :, :-1], u[:, :, 1:] - u[:, :, :-1])
    # divergence is the negative adjoint of the forward gradient, <grad u, p> = -<u, div p>, for duals
    # that are zero where the gradient is (last column / row), as the iterations keep them
    p1, p2 = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    p1[:, :, -1] = 0
    p2[:, -1] = 0
    torch.testing.assert_close((gx * p1 + gy * p2).sum(), -(u * divergence(p1, p2)).sum())
    cx, cy = centered_gradient(u)
    torch.testing.assert_close(cx[:, :, 2], 0.5 * (u[:, :, 3] - u[:, :, 1]))
    torch.testing.assert_close(cx[:, :, 0], 0.5 * (u[:, :, 1] - u[:, :, 0]))
    torch.testing.assert_close(cy[:, -1], 0.5 * (u[:, -1] - u[:, -2]))


_INTERPRETER_CHECK = textwrap.dedent(
    """
    import torch
    from mateffnet.flow.tvl1 import solve_warp_torch, tvl1
    from mateffnet.flow.tvl1_params import TVL1Params
    from mateffnet.flow.tvl1_triton import solve_warp_triton

    torch.manual_seed(0)
    n, h, w = 3, 21, 70
    u = torch.randn(n, 2, h, w)
    duals = (torch.rand(n, 4, h, w) - 0.5) * 0.5
    i1wx, i1wy, rho_c = torch.randn(n, h, w) * 10, torch.randn(n, h, w) * 10, torch.randn(n, h, w) * 20
    u[2], duals[2], rho_c[2] = 0.0, 0.0, 0.0  # a pair that does not move: it stops at once
    for epsilon, inner, outer, steps in [(0.0, 7, 2, 3), (0.02, 6, 2, 1)]:
        p = TVL1Params(epsilon=epsilon, inner_iterations=inner, outer_iterations=outer)
        ref_u, ref_p = solve_warp_torch(u.clone(), duals.clone(), i1wx, i1wy, rho_c, p)
        out_u, out_p = solve_warp_triton(u.clone(), duals.clone(), i1wx, i1wy, rho_c, p, steps_per_launch=steps)
        assert (ref_u - out_u).abs().max() < 1e-4, (epsilon, steps, (ref_u - out_u).abs().max())
        assert (ref_p - out_p).abs().max() < 1e-4, (epsilon, steps, (ref_p - out_p).abs().max())
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 40, 52) * 255, 5, 1, 2)[0, 0]
    frames0 = torch.stack([texture[4:34, 4:45], texture[6:36, 3:44]])
    frames1 = torch.stack([texture[5:35, 6:47], texture[6:36, 3:44]])
    params = dict(nscales=2, warps=2, inner_iterations=4, outer_iterations=2)
    a = tvl1(frames0, frames1, backend="triton", **params)
    b = tvl1(frames0, frames1, backend="torch", **params)
    assert (a - b).abs().max() < 1e-4, (a - b).abs().max()
    from mateffnet.flow.median_triton import median_filter_triton
    from mateffnet.flow.tvl1 import median_filter
    for size in (3, 5):
        filtered = median_filter_triton(u, size, active=torch.tensor([1, 0, 1], dtype=torch.int32))
        assert torch.equal(filtered[0], median_filter(u[0], size)) and torch.equal(filtered[1], u[1])
    print("ok")
    """
)


def test_fused_triton_solver_equals_the_reference_in_triton_s_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_and_cpu_give_the_same_flow(demo_gray_frames):
    cases = _suite(demo_gray_frames, 96, 128)
    frames0 = torch.stack([c[1] for c in cases])
    frames1 = torch.stack([c[2] for c in cases])
    params = {"epsilon": 0.0, "inner_iterations": 30, "outer_iterations": 1}
    cpu = tvl1(frames0, frames1, backend="torch", **params)
    for backend in ("torch", "triton"):
        gpu = tvl1(frames0.cuda(), frames1.cuda(), backend=backend, **params).cpu()
        assert (gpu - cpu).norm(dim=1).mean() < 1e-3, backend

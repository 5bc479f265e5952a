"""TV-L1 optical flow in PyTorch, batched over frame pairs, on any device.

The algorithm is Zach, Pock & Bischof (2007) as specified by Sánchez, Meinhardt-Llopis & Facciolo
(IPOL 2013), in the form OpenCV's `cv2.optflow.DualTVL1OpticalFlow` implements it, with the same
parameters and defaults:

- a pyramid of `nscales` levels, each made from the previous one by bilinear resizing with factor
  `scale_step` (OpenCV's `cv::resize(..., INTER_LINEAR)`, no pre-smoothing), stopping before a level
  would be smaller than 16 px; the flow is upsampled bilinearly and multiplied by 1/scale_step;
- at each level `warps` times: warp I1 and its centred-difference gradient bicubically to the current
  flow, then up to `outer_iterations` × `inner_iterations` primal-dual iterations, a `median_filtering`
  × `median_filtering` median of the flow at the start of each outer iteration, and OpenCV's stopping
  rule (stop once the squared change of the flow summed over the image is ≤ epsilon² · area);
- optional illumination term `gamma` (OpenCV's u3).

Differences from OpenCV's CPU code: the bicubic warp replicates the image border instead of reading
zeros outside it, and its positions are not rounded to 1/32 px (both as in OpenCV's CUDA version, the
one behind the field's denseflow flow); where |∇I1|² ≤ FLT_EPSILON the thresholding step may move v
by up to 2e-5 px where OpenCV leaves it (see `primal_dual_step`). With one scale and one warp the
flow equals OpenCV's to float rounding. The border changes the warped data term near the edges, and
with it the iteration at which the epsilon rule stops: over the synthetic suite ours is as accurate
or better on average, and on single cases either way by a few hundredths of a pixel (tests/flow).

Two interchangeable solvers run the iterations: a plain PyTorch one (the reference; CPU and any GPU)
and a fused Triton one for CUDA (`flow/tvl1_triton.py`) that runs several iterations per kernel
launch in on-chip memory. With `epsilon=0` the iteration count is fixed, which never synchronises the
host; that is how dataset-scale extraction should call it (`mateffnet.flow.TVL1_FAST`).

Throughput (measured in BENCHMARKS.md): on a GPU pass large batches of pairs already on the device
(a hundred or more pairs of 340x256 fill one). On the CPU run one pair per worker process
with torch.set_num_threads(1): a single large batch on many threads is limited by memory bandwidth.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from mateffnet.errors import MateffnetError
from mateffnet.flow.tvl1_params import TVL1Params

# OpenCV's cvtColor(RGB2GRAY) weights.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_MIN_PYRAMID_SIZE = 16
_FLT_EPSILON = torch.finfo(torch.float32).eps


def tvl1(
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    *,
    initial_flow: torch.Tensor | None = None,
    backend: str = "auto",
    **params,
) -> torch.Tensor:
    """TV-L1 flow from each frame of `frames0` to the same-index frame of `frames1`.

    frames: (N, H, W) grayscale or (N, 3, H, W) RGB, uint8 or float in 0–255 units (not 0–1 as
    OpenCV reads float images), on any device. Colour is converted to gray with OpenCV's weights
    (kept in float, where cv2.cvtColor would round to uint8).
    Returns (N, 2, H, W) float32 flow in pixels on the input's device (channel 0 = x, 1 = y).

    params: the fields of `TVL1Params` (OpenCV's names in snake case: tau, lambda_, theta, nscales,
    warps, epsilon, inner_iterations, outer_iterations, scale_step, gamma, median_filtering).
    initial_flow: (N, 2, H, W) flow to start from (OpenCV's useInitialFlow), else zero.
    backend: "torch" (plain PyTorch, the reference), "triton" (fused kernels, CUDA only), or "auto"
    (Triton on CUDA when it is installed and gamma is 0, else PyTorch).
    """
    try:
        p = TVL1Params(**params)
    except TypeError as error:
        known = ", ".join(TVL1Params.__dataclass_fields__)
        raise MateffnetError(f"unknown TV-L1 parameter in {sorted(params)}; expected some of: {known}") from error
    gray0, gray1 = to_gray(frames0, "frames0"), to_gray(frames1, "frames1")
    if gray0.shape != gray1.shape:
        raise MateffnetError(f"frames0 {tuple(frames0.shape)} and frames1 {tuple(frames1.shape)} differ in shape")
    if gray0.device != gray1.device:
        raise MateffnetError(f"frames0 is on {gray0.device} and frames1 on {gray1.device}; expected one device")
    n, h, w = gray0.shape
    if h < 3 or w < 3:
        raise MateffnetError(f"frames of {h}x{w} px are too small for TV-L1; need at least 3x3")
    if initial_flow is not None and tuple(initial_flow.shape) != (n, 2, h, w):
        raise MateffnetError(f"initial_flow has shape {tuple(initial_flow.shape)}; expected {(n, 2, h, w)}")
    solver = _pick_solver(backend, gray0.device, p)
    if n == 0:
        return gray0.new_zeros(0, 2, h, w)
    return _pyramid_flow(gray0, gray1, p, initial_flow, solver)


def to_gray(frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
    """(N, H, W) or (N, 3, H, W), uint8 or float 0–255 → (N, H, W) float32 gray in 0–255."""
    if not isinstance(frames, torch.Tensor):
        raise MateffnetError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim == 4 and frames.shape[1] == 3:
        # non_blocking: a blocking upload would wait for all work queued on the GPU before it
        weights = torch.tensor(_GRAY_WEIGHTS, dtype=torch.float32).to(frames.device, non_blocking=True).view(1, 3, 1, 1)
        return (frames.float() * weights).sum(1)
    if frames.ndim == 3:
        return frames.float()
    raise MateffnetError(f"{name} has shape {tuple(frames.shape)}; expected (N, H, W) gray or (N, 3, H, W) RGB")


# ----------------------------------------------------------------------------------------------
# Pyramid and warping (shared by both solvers)


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Level sizes, finest first, as OpenCV makes them (round to nearest, stop below 16 px)."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        h, w = _cv_round(h * scale_step), _cv_round(w * scale_step)
        if h < _MIN_PYRAMID_SIZE or w < _MIN_PYRAMID_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _cv_round(value: float) -> int:
    return int(round(value))  # OpenCV's cvRound rounds half to even, as Python's round does


def _resize(images: torch.Tensor, size: tuple[int, int], scale: float | None = None) -> torch.Tensor:
    """Bilinear resize of (N, H, W) like cv::resize INTER_LINEAR (half-pixel centres, clamped edges).

    With `scale` the source position is (dst + 0.5) / scale - 0.5 as in OpenCV's resize by a factor;
    without it the factor is the ratio of the sizes.
    """
    scales = (scale, scale) if scale is not None else (None, None)
    out = torch.ops.aten.upsample_bilinear2d.default(images[:, None], list(size), False, *scales)
    return out[:, 0]


def centered_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 · (I[x+1] - I[x-1]) with the border replicated, for (N, H, W)."""
    padded_x = F.pad(image[:, None], (1, 1, 0, 0), mode="replicate")[:, 0]
    padded_y = F.pad(image[:, None], (0, 0, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded_x[:, :, 2:] - padded_x[:, :, :-2])
    dy = 0.5 * (padded_y[:, 2:, :] - padded_y[:, :-2, :])
    return dx, dy


def warp_bicubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (N, C, H, W) images at x + flow (N, 2, H, W): bicubic (a = -0.75), border replicated."""
    n, _, h, w = images.shape
    ys = torch.arange(h, device=images.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=images.device, dtype=torch.float32).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=True)


def _pyramid_flow(gray0, gray1, p: TVL1Params, initial_flow, solver) -> torch.Tensor:
    n, h, w = gray0.shape
    sizes = pyramid_sizes(h, w, p.nscales, p.scale_step)
    levels0, levels1 = [gray0], [gray1]
    for size in sizes[1:]:
        levels0.append(_resize(levels0[-1], size, p.scale_step))
        levels1.append(_resize(levels1[-1], size, p.scale_step))
    use_gamma = p.gamma != 0
    if initial_flow is None:
        coarse_h, coarse_w = sizes[-1]
        u = gray0.new_zeros(n, 3 if use_gamma else 2, coarse_h, coarse_w)
    else:
        u = initial_flow.to(device=gray0.device, dtype=torch.float32)
        for size in sizes[1:]:
            u = torch.ops.aten.upsample_bilinear2d.default(u, list(size), False, p.scale_step, p.scale_step)
            u = u * p.scale_step
        if use_gamma:
            u = torch.cat([u, u.new_zeros(n, 1, *sizes[-1])], dim=1)
    for level in range(len(sizes) - 1, -1, -1):
        u = _one_scale(levels0[level], levels1[level], u.contiguous(), p, solver)
        if level > 0:
            u = torch.ops.aten.upsample_bilinear2d.default(u, list(sizes[level - 1]), False, None, None)
            u[:, :2] *= 1.0 / p.scale_step  # u3 (illumination) is not a displacement
    return u[:, :2].contiguous()


def _one_scale(i0, i1, u, p: TVL1Params, solver):
    i1x, i1y = centered_gradient(i1)
    sources = torch.stack((i1, i1x, i1y), dim=1)
    n, _, h, w = u.shape
    duals = u.new_zeros(n, 2 * u.shape[1], h, w)  # p11, p12, p21, p22 (, p31, p32)
    for _ in range(p.warps):
        i1w, i1wx, i1wy = warp_bicubic(sources, u[:, :2]).unbind(1)
        rho_c = i1w - i1wx * u[:, 0] - i1wy * u[:, 1] - i0
        u, duals = solver(u, duals, i1wx.contiguous(), i1wy.contiguous(), rho_c.contiguous(), p)
    return u


# ----------------------------------------------------------------------------------------------
# The reference solver: one warp's primal-dual iterations in plain PyTorch


def solve_warp_torch(u, duals, i1wx, i1wy, rho_c, p: TVL1Params):
    """Run one warp's iterations with OpenCV's stopping rule, each pair stopping on its own.

    u: (N, 2 or 3, H, W) flow (and u3), duals: (N, 4 or 6, H, W); returns the updated pair.
    A pair whose flow stops changing (OpenCV's error ≤ epsilon² · area) leaves the batch, so the
    others iterate on without paying for it.
    """
    n, _, h, w = u.shape
    # OpenCV leaves gamma² out of |∇I1|², also with gamma > 0.
    inv_grad = 1.0 / (i1wx * i1wx + i1wy * i1wy).clamp_min_(_FLT_EPSILON)
    scaled_epsilon = p.epsilon * p.epsilon * h * w
    alive = torch.arange(n, device=u.device)  # batch index of each pair still iterating
    done_u = done_duals = None  # the state of the pairs that stopped, once one has
    for _ in range(p.outer_iterations):
        if p.median_filtering > 1:
            filtered = median_filter(u[:, :2].reshape(-1, h, w), p.median_filtering)
            u = torch.cat([filtered.view(-1, 2, h, w), u[:, 2:]], dim=1)
        for _ in range(p.inner_iterations):
            u_new, duals = primal_dual_step(u, duals, i1wx, i1wy, rho_c, inv_grad, p)
            if p.epsilon > 0:
                error = (u_new[:, :2] - u[:, :2]).square_().sum(dim=(1, 2, 3))
            u = u_new
            if p.epsilon > 0:
                # One host synchronisation per iteration: the price of OpenCV's stopping rule.
                going_on = error > scaled_epsilon
                if not bool(going_on.all()):
                    if done_u is None:
                        done_u, done_duals = torch.empty_like(u), torch.empty_like(duals)
                    stopped = ~going_on
                    done_u[alive[stopped]] = u[stopped]
                    done_duals[alive[stopped]] = duals[stopped]
                    alive, u, duals = alive[going_on], u[going_on], duals[going_on]
                    i1wx, i1wy, rho_c, inv_grad = i1wx[going_on], i1wy[going_on], rho_c[going_on], inv_grad[going_on]
                    if alive.numel() == 0:
                        return done_u, done_duals
    if done_u is None:
        return u, duals
    done_u[alive] = u
    done_duals[alive] = duals
    return done_u, done_duals


def primal_dual_step(u, duals, i1wx, i1wy, rho_c, inv_grad, p: TVL1Params):
    """One iteration of OpenCV's estimateV, divergence, estimateU, forwardGradient, estimateDualVariables.

    Thresholding: v = u + fi·∇I1 with fi = clamp(-rho / |∇I1|², ±lambda·theta), which is OpenCV's
    three-case rule; where |∇I1|² ≤ FLT_EPSILON (OpenCV leaves v = u there) this moves v by at most
    lambda·theta·|∇I1| < 2e-5 px. Returns the new u and the new duals.
    """
    l_t, taut, theta = p.lambda_ * p.theta, p.tau / p.theta, p.theta
    rho = torch.addcmul(rho_c, i1wx, u[:, 0]).addcmul_(i1wy, u[:, 1])
    if p.gamma:
        rho.add_(u[:, 2], alpha=p.gamma)
    fi = rho.mul_(inv_grad).clamp_(-l_t, l_t).neg_()
    directions = (i1wx, i1wy, p.gamma)[: u.shape[1]]
    u_new = torch.empty_like(u)
    for c, direction in enumerate(directions):
        out = u_new[:, c]
        divergence(duals[:, 2 * c], duals[:, 2 * c + 1], out=out)
        out.mul_(theta).add_(u[:, c])
        if c < 2:
            out.addcmul_(fi, direction)
        else:
            out.add_(fi, alpha=direction)
    duals_new = torch.empty_like(duals)
    for c in range(len(directions)):
        gx, gy = duals_new[:, 2 * c], duals_new[:, 2 * c + 1]
        forward_gradient(u_new[:, c], out=(gx, gy))
        inv_norm = torch.hypot(gx, gy).mul_(taut).add_(1.0).reciprocal_()
        gx.mul_(taut).add_(duals[:, 2 * c]).mul_(inv_norm)
        gy.mul_(taut).add_(duals[:, 2 * c + 1]).mul_(inv_norm)
    return u_new, duals_new


def forward_gradient(u: torch.Tensor, out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """u[x+1] - u[x] and u[y+1] - u[y], zero on the last column / row, for (N, H, W)."""
    gx, gy = out if out is not None else (torch.empty_like(u), torch.empty_like(u))
    torch.sub(u[:, :, 1:], u[:, :, :-1], out=gx[:, :, :-1])
    gx[:, :, -1] = 0
    torch.sub(u[:, 1:, :], u[:, :-1, :], out=gy[:, :-1, :])
    gy[:, -1, :] = 0
    return gx, gy


def divergence(v1: torch.Tensor, v2: torch.Tensor, out=None) -> torch.Tensor:
    """Backward-difference divergence, the negative adjoint of `forward_gradient`, for (N, H, W)."""
    out = torch.add(v1, v2, out=out)
    out[:, :, 1:] -= v1[:, :, :-1]
    out[:, 1:, :] -= v2[:, :-1, :]
    return out


def median_filter(u: torch.Tensor, size: int) -> torch.Tensor:
    """size × size median of (N, H, W) with the border replicated (cv::medianBlur on float images).

    A pruned sorting network of elementwise min/max over the size² shifted views: no sort, no
    size²-fold copy of the image.
    """
    n, h, w = u.shape
    r = size // 2
    padded = F.pad(u[:, None], (r, r, r, r), mode="replicate")[:, 0]
    wires = [padded[:, dy : dy + h, dx : dx + w] for dy in range(size) for dx in range(size)]
    network, output = _median_network(size * size)
    for lo, hi, need_lo, need_hi in network:
        a, b = wires[lo], wires[hi]
        if need_lo:
            wires[lo] = torch.minimum(a, b)
        if need_hi:
            wires[hi] = torch.maximum(a, b)
    return wires[output].contiguous()


@functools.cache
def _median_network(count: int) -> tuple[list[tuple[int, int, bool, bool]], int]:
    """Comparators (lo, hi, keep min, keep max) that leave the median of `count` inputs on one wire.

    Batcher's odd-even merge sort for the next power of two, with the padding wires (+inf) folded away
    and every comparator that cannot reach the median's wire dropped (9 inputs: 40 min/max, 25: 202).
    """
    size = 1 << (count - 1).bit_length()
    comparators = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
            k //= 2
        p *= 2
    slot = list(range(size))  # which stored value sits at each position of the network
    infinite = [i >= count for i in range(size)]
    live = []
    for i, j in comparators:
        if infinite[j]:
            continue  # min is the finite value, already in place
        if infinite[i]:
            slot[i], slot[j] = slot[j], slot[i]
            infinite[i], infinite[j] = False, True
            continue
        live.append((slot[i], slot[j]))
    needed = {slot[count // 2]}
    network = []
    for lo, hi in reversed(live):
        need_lo, need_hi = lo in needed, hi in needed
        if need_lo or need_hi:
            network.append((lo, hi, need_lo, need_hi))
            needed.update((lo, hi))
    return network[::-1], slot[count // 2]


# ----------------------------------------------------------------------------------------------


def _pick_solver(backend: str, device: torch.device, p: TVL1Params):
    if backend not in ("auto", "torch", "triton"):
        raise MateffnetError(f"TV-L1 backend {backend!r}; expected auto, torch or triton")
    if backend == "torch":
        return solve_warp_torch
    # Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors: how the tests check them.
    on_triton_device = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    usable = on_triton_device and p.gamma == 0 and _triton_available()
    if backend == "triton" and not usable:
        why = (
            "needs a CUDA device" if not on_triton_device
            else "does not implement gamma > 0" if p.gamma != 0
            else "needs the triton package, 3.2 or newer (pip install -U triton)"
        )
        raise MateffnetError(f"TV-L1 backend 'triton' {why}; use backend='torch'")
    if usable:
        from mateffnet.flow.tvl1_triton import solve_warp_triton

        return solve_warp_triton
    return solve_warp_torch


def _triton_available() -> bool:
    try:
        import triton.language
    except ImportError:
        return False
    return hasattr(triton.language, "gather")  # Triton >= 3.2


__all__ = ["tvl1", "to_gray", "pyramid_sizes"]

"""Fused Triton kernels for the TV-L1 iterations on CUDA (the reference is `tvl1.solve_warp_torch`).

One launch runs `steps` whole primal-dual iterations (thresholding, divergence, primal update, forward
gradient, dual update) on a tile of the image kept in registers, so the state (u1, u2, p11, p12, p21,
p22 and the warped-image terms I1wx, I1wy, rho_c) crosses device memory once per launch instead of
several times per iteration. Neighbour values come from `tl.gather` inside the tile; every iteration
spoils one more pixel at the tile's edge (the update reads each neighbour once), so a tile of BH × BW
writes back its (BH - 2·steps) × (BW - 2·steps) interior and tiles overlap by `steps` pixels.

The arithmetic is the reference's, term by term, so both agree to float32 rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mateffnet.flow.median_triton import median_filter_triton
from mateffnet.flow.tvl1_params import TVL1Params

# Iterations fused into one launch, and the tile (BH, BW, num_warps) for each count: the fastest of
# benchmarks/flow_kernels.py on an H100 (BENCHMARKS.md); larger tiles spill registers.
STEPS_PER_LAUNCH = 6
TILES = {1: (16, 64, 4), 2: (16, 64, 4), 6: (32, 128, 16)}
DEFAULT_TILE = (32, 64, 8)
# "loads": one iteration per launch, the neighbours' new u recomputed from memory instead of exchanged
# in the tile; simpler, ~1.7x slower on an H100. Kept for comparison.
KERNEL = "gather"


@triton.jit
def _iterations_kernel(
    u_ptr, p_ptr, c_ptr, u_out_ptr, p_out_ptr, active_ptr, error_ptr,
    H, W, l_t, theta, taut,
    STEPS: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, TRACK: tl.constexpr,
):
    OH: tl.constexpr = BH - 2 * STEPS
    OW: tl.constexpr = BW - 2 * STEPS
    pair = tl.program_id(2).to(tl.int64)
    ri = tl.arange(0, BH)[:, None]
    ci = tl.arange(0, BW)[None, :]
    y = tl.program_id(1) * OH - STEPS + ri
    x = tl.program_id(0) * OW - STEPS + ci
    inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    plane = H * W
    offs = y * W + x
    u_base = u_ptr + pair * 2 * plane + offs
    p_base = p_ptr + pair * 4 * plane + offs
    c_base = c_ptr + pair * 3 * plane + offs
    u1 = tl.load(u_base, mask=inside, other=0.0)
    u2 = tl.load(u_base + plane, mask=inside, other=0.0)
    p11 = tl.load(p_base, mask=inside, other=0.0)
    p12 = tl.load(p_base + plane, mask=inside, other=0.0)
    p21 = tl.load(p_base + 2 * plane, mask=inside, other=0.0)
    p22 = tl.load(p_base + 3 * plane, mask=inside, other=0.0)
    i1wx = tl.load(c_base, mask=inside, other=0.0)
    i1wy = tl.load(c_base + plane, mask=inside, other=0.0)
    rho_c = tl.load(c_base + 2 * plane, mask=inside, other=0.0)
    inv_grad = 1.0 / tl.maximum(i1wx * i1wx + i1wy * i1wy, 1.1920928955078125e-07)

    # Image-boundary rules of the discrete operators (OpenCV's divergence and forwardGradient).
    has_left = x > 0
    has_up = y > 0
    has_right = x < W - 1
    has_down = y < H - 1
    left = tl.broadcast_to(tl.maximum(ci - 1, 0), (BH, BW))
    right = tl.broadcast_to(tl.minimum(ci + 1, BW - 1), (BH, BW))
    up = tl.broadcast_to(tl.maximum(ri - 1, 0), (BH, BW))
    down = tl.broadcast_to(tl.minimum(ri + 1, BH - 1), (BH, BW))

    u1_old = u1
    u2_old = u2
    for _ in tl.static_range(STEPS):
        u1_old = u1
        u2_old = u2
        rho = rho_c + i1wx * u1 + i1wy * u2
        fi = -tl.minimum(tl.maximum(rho * inv_grad, -l_t), l_t)
        div1 = p11 + p12 - tl.where(has_left, tl.gather(p11, left, 1), 0.0) - tl.where(has_up, tl.gather(p12, up, 0), 0.0)
        div2 = p21 + p22 - tl.where(has_left, tl.gather(p21, left, 1), 0.0) - tl.where(has_up, tl.gather(p22, up, 0), 0.0)
        u1 = u1 + fi * i1wx + theta * div1
        u2 = u2 + fi * i1wy + theta * div2
        g11 = tl.where(has_right, tl.gather(u1, right, 1) - u1, 0.0)
        g12 = tl.where(has_down, tl.gather(u1, down, 0) - u1, 0.0)
        g21 = tl.where(has_right, tl.gather(u2, right, 1) - u2, 0.0)
        g22 = tl.where(has_down, tl.gather(u2, down, 0) - u2, 0.0)
        n1 = 1.0 / (1.0 + taut * tl.sqrt(g11 * g11 + g12 * g12))
        n2 = 1.0 / (1.0 + taut * tl.sqrt(g21 * g21 + g22 * g22))
        p11 = (p11 + taut * g11) * n1
        p12 = (p12 + taut * g12) * n1
        p21 = (p21 + taut * g21) * n2
        p22 = (p22 + taut * g22) * n2

    interior = inside & (ri >= STEPS) & (ri < BH - STEPS) & (ci >= STEPS) & (ci < BW - STEPS)
    if TRACK:
        # OpenCV's stopping rule (STEPS == 1): per-pair squared change of the flow; pairs already
        # converged keep their state.
        active = tl.load(active_ptr + pair) != 0
        change = tl.where(interior, (u1 - u1_old) * (u1 - u1_old) + (u2 - u2_old) * (u2 - u2_old), 0.0)
        tl.atomic_add(error_ptr + pair, tl.sum(tl.sum(change, axis=1), axis=0))
        keep = interior & ~active
        u1 = tl.where(keep, u1_old, u1)
        u2 = tl.where(keep, u2_old, u2)
        p11 = tl.where(keep, tl.load(p_base, mask=keep, other=0.0), p11)
        p12 = tl.where(keep, tl.load(p_base + plane, mask=keep, other=0.0), p12)
        p21 = tl.where(keep, tl.load(p_base + 2 * plane, mask=keep, other=0.0), p21)
        p22 = tl.where(keep, tl.load(p_base + 3 * plane, mask=keep, other=0.0), p22)
    uo = u_out_ptr + pair * 2 * plane + offs
    po = p_out_ptr + pair * 4 * plane + offs
    tl.store(uo, u1, mask=interior)
    tl.store(uo + plane, u2, mask=interior)
    tl.store(po, p11, mask=interior)
    tl.store(po + plane, p12, mask=interior)
    tl.store(po + 2 * plane, p21, mask=interior)
    tl.store(po + 3 * plane, p22, mask=interior)


@triton.jit
def _primal_at(u_base, p_base, c_base, y, x, H, W, plane, l_t, theta):
    """u after one primal step at pixels (y, x), from the state in memory (estimateV + estimateU)."""
    inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    offs = y * W + x
    u1 = tl.load(u_base + offs, mask=inside, other=0.0)
    u2 = tl.load(u_base + plane + offs, mask=inside, other=0.0)
    i1wx = tl.load(c_base + offs, mask=inside, other=0.0)
    i1wy = tl.load(c_base + plane + offs, mask=inside, other=0.0)
    rho_c = tl.load(c_base + 2 * plane + offs, mask=inside, other=0.0)
    left = inside & (x > 0)
    up = inside & (y > 0)
    div1 = (tl.load(p_base + offs, mask=inside, other=0.0) + tl.load(p_base + plane + offs, mask=inside, other=0.0)
            - tl.load(p_base + offs - 1, mask=left, other=0.0) - tl.load(p_base + plane + offs - W, mask=up, other=0.0))
    div2 = (tl.load(p_base + 2 * plane + offs, mask=inside, other=0.0) + tl.load(p_base + 3 * plane + offs, mask=inside, other=0.0)
            - tl.load(p_base + 2 * plane + offs - 1, mask=left, other=0.0) - tl.load(p_base + 3 * plane + offs - W, mask=up, other=0.0))
    inv_grad = 1.0 / tl.maximum(i1wx * i1wx + i1wy * i1wy, 1.1920928955078125e-07)
    rho = rho_c + i1wx * u1 + i1wy * u2
    fi = -tl.minimum(tl.maximum(rho * inv_grad, -l_t), l_t)
    return u1 + fi * i1wx + theta * div1, u2 + fi * i1wy + theta * div2


@triton.jit
def _one_iteration_kernel(
    u_ptr, p_ptr, c_ptr, u_out_ptr, p_out_ptr, H, W, l_t, theta, taut, BH: tl.constexpr, BW: tl.constexpr,
):
    """One iteration without tile exchange: the new u at the right and lower neighbours, which the dual
    update needs, is recomputed from memory (neighbour reads hit the cache)."""
    pair = tl.program_id(2).to(tl.int64)
    y = tl.program_id(1) * BH + tl.arange(0, BH)[:, None]
    x = tl.program_id(0) * BW + tl.arange(0, BW)[None, :]
    inside = (y < H) & (x < W)
    plane = H * W
    u_base = u_ptr + pair * 2 * plane
    p_base = p_ptr + pair * 4 * plane
    c_base = c_ptr + pair * 3 * plane
    u1, u2 = _primal_at(u_base, p_base, c_base, y, x, H, W, plane, l_t, theta)
    u1r, u2r = _primal_at(u_base, p_base, c_base, y, x + 1, H, W, plane, l_t, theta)
    u1d, u2d = _primal_at(u_base, p_base, c_base, y + 1, x, H, W, plane, l_t, theta)
    has_right = x < W - 1
    has_down = y < H - 1
    g11 = tl.where(has_right, u1r - u1, 0.0)
    g12 = tl.where(has_down, u1d - u1, 0.0)
    g21 = tl.where(has_right, u2r - u2, 0.0)
    g22 = tl.where(has_down, u2d - u2, 0.0)
    n1 = 1.0 / (1.0 + taut * tl.sqrt(g11 * g11 + g12 * g12))
    n2 = 1.0 / (1.0 + taut * tl.sqrt(g21 * g21 + g22 * g22))
    offs = y * W + x
    po = p_out_ptr + pair * 4 * plane + offs
    tl.store(po, (tl.load(p_base + offs, mask=inside) + taut * g11) * n1, mask=inside)
    tl.store(po + plane, (tl.load(p_base + plane + offs, mask=inside) + taut * g12) * n1, mask=inside)
    tl.store(po + 2 * plane, (tl.load(p_base + 2 * plane + offs, mask=inside) + taut * g21) * n2, mask=inside)
    tl.store(po + 3 * plane, (tl.load(p_base + 3 * plane + offs, mask=inside) + taut * g22) * n2, mask=inside)
    uo = u_out_ptr + pair * 2 * plane + offs
    tl.store(uo, u1, mask=inside)
    tl.store(uo + plane, u2, mask=inside)


def run_one_iteration_loads(u, duals, consts, out_u, out_duals, p: TVL1Params, bh: int = 16, bw: int = 64, warps: int = 4):
    """One iteration with `_one_iteration_kernel` (the variant without tl.gather)."""
    n, _, h, w = u.shape
    grid = (triton.cdiv(w, bw), triton.cdiv(h, bh), n)
    _one_iteration_kernel[grid](
        u, duals, consts, out_u, out_duals, h, w, p.lambda_ * p.theta, p.theta, p.tau / p.theta,
        BH=bh, BW=bw, num_warps=warps,
    )


def run_iterations(u, duals, consts, out_u, out_duals, p: TVL1Params, steps: int, active=None, error=None, tile=None):
    """`steps` iterations from (u, duals) into (out_u, out_duals); with `active`/`error` (steps == 1),
    also OpenCV's per-pair error, and pairs not active are left unchanged."""
    n, _, h, w = u.shape
    bh, bw, warps = tile or TILES.get(steps, DEFAULT_TILE)
    track = active is not None
    if track and steps != 1:
        raise ValueError("the stopping rule is checked after every iteration: steps must be 1")
    grid = (triton.cdiv(w, bw - 2 * steps), triton.cdiv(h, bh - 2 * steps), n)
    _iterations_kernel[grid](
        u, duals, consts, out_u, out_duals,
        active if track else u, error if track else u,  # (unused without TRACK)
        h, w, p.lambda_ * p.theta, p.theta, p.tau / p.theta,
        STEPS=steps, BH=bh, BW=bw, TRACK=track, num_warps=warps,
    )


def solve_warp_triton(u, duals, i1wx, i1wy, rho_c, p: TVL1Params, steps_per_launch: int | None = None):
    """Drop-in for `tvl1.solve_warp_torch` (gamma = 0): one warp's iterations with fused kernels.

    With epsilon = 0 the count is fixed: `steps_per_launch` iterations run per launch and nothing waits
    for the host. With epsilon > 0 every iteration is a launch that also sums OpenCV's error per pair
    and freezes the pairs that converged (exactly OpenCV's rule, per pair); every 10 iterations the host
    looks, drops converged pairs from the batch and stops once none is left.
    """
    n, _, h, w = u.shape
    steps_per_launch = steps_per_launch or STEPS_PER_LAUNCH
    consts = torch.stack((i1wx, i1wy, rho_c), dim=1)
    u, duals = u.contiguous(), duals.contiguous()
    u_next, duals_next = torch.empty_like(u), torch.empty_like(duals)
    track = p.epsilon > 0
    active = torch.ones(n, dtype=torch.int32, device=u.device)
    error = torch.zeros(n, dtype=torch.float32, device=u.device)
    scaled_epsilon = p.epsilon * p.epsilon * h * w
    alive = torch.arange(n, device=u.device)  # batch index of each pair still iterating
    done_u = done_duals = None  # the state of the pairs that stopped, once one has
    done_iterations = 0
    for _ in range(p.outer_iterations):
        if p.median_filtering > 1:
            u = median_filter_triton(u, p.median_filtering, active if track else None)
        remaining = p.inner_iterations
        while remaining > 0:
            steps = 1 if track else min(steps_per_launch, remaining)
            if track:
                error.zero_()
                run_iterations(u, duals, consts, u_next, duals_next, p, 1, active, error)
                active &= (error > scaled_epsilon).int()
            elif KERNEL == "loads":
                steps = 1
                run_one_iteration_loads(u, duals, consts, u_next, duals_next, p)
            else:
                run_iterations(u, duals, consts, u_next, duals_next, p, steps)
            u, u_next = u_next, u
            duals, duals_next = duals_next, duals
            remaining -= steps
            done_iterations += steps
            if track and done_iterations % 10 == 0:
                going_on = active != 0
                if not bool(going_on.all()):
                    if done_u is None:
                        done_u, done_duals = torch.empty_like(u), torch.empty_like(duals)
                    stopped = ~going_on
                    done_u[alive[stopped]] = u[stopped]
                    done_duals[alive[stopped]] = duals[stopped]
                    if not bool(going_on.any()):
                        return done_u, done_duals
                    alive, u, duals, consts = alive[going_on], u[going_on], duals[going_on], consts[going_on]
                    active, error = active[going_on], error[going_on]
                    u_next, duals_next = torch.empty_like(u), torch.empty_like(duals)
    if done_u is None:
        return u, duals
    done_u[alive] = u
    done_duals[alive] = duals
    return done_u, done_duals

import math

import pytest
import torch

from tests.helpers import flows as synthetic


def _texture(h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, h, w, generator=g) * 255
    return torch.nn.functional.avg_pool2d(noise, 5, 1, 2)[0, 0].round().to(torch.uint8)


def test_integer_translation_is_a_shifted_copy():
    frame1 = _texture()
    frame0, _, valid = synthetic.make_pair(frame1, synthetic.translation(48, 64, 3, -2))
    # frame0(x) = frame1(x + (3, -2)): row y of frame0 is row y-2 of frame1, shifted left by 3
    assert torch.equal(frame0[2:, :-3], frame1[:-2, 3:])
    assert not valid[:, -3:].any() and not valid[:2].any() and valid[10:-10, 10:-10].all()


def test_frame0_samples_frame1_along_the_flow():
    frame1 = _texture()
    flow = synthetic.smooth_field(48, 64, 3.0, seed=2)
    frame0, _, valid = synthetic.make_pair(frame1, flow)
    y, x = 20, 30
    tx, ty = x + flow[0, y, x].item(), y + flow[1, y, x].item()
    x0, y0 = math.floor(tx), math.floor(ty)
    neighbours = frame1[y0 : y0 + 2, x0 : x0 + 2].float()
    assert neighbours.min() - 2 <= frame0[y, x].float() <= neighbours.max() + 2
    assert valid[y, x]


@pytest.mark.parametrize("name", list(synthetic.standard_cases(256, 340)))
def test_standard_cases_stay_within_15_px_and_are_smooth(name):
    flow = synthetic.standard_cases(256, 340)[name]
    magnitude = flow.norm(dim=0)
    assert magnitude.max() <= 15.0
    assert magnitude.max() > 0.5
    assert (flow[:, :, 1:] - flow[:, :, :-1]).abs().max() < 0.2  # no discontinuities


def test_endpoint_error_ignores_invalid_pixels():
    truth = torch.zeros(2, 4, 4)
    estimate = truth.clone()
    estimate[:, 0, 0] = torch.tensor([3.0, 4.0])
    valid = torch.ones(4, 4, dtype=torch.bool)
    assert synthetic.endpoint_error(estimate, truth, valid) == pytest.approx(5.0 / 16)
    valid[0, 0] = False
    assert synthetic.endpoint_error(estimate, truth, valid) == 0.0

import math

import torch

from mateffnet.flow.colorwheel import color_wheel, flow_to_color


def test_wheel_has_middleburys_55_colours_starting_at_red():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert wheel[0].tolist() == [1.0, 0.0, 0.0]
    assert wheel[15].tolist() == [1.0, 1.0, 0.0]  # yellow after the 15 red→yellow steps


def test_matches_torchvisions_flow_to_image():
    from torchvision.utils import flow_to_image

    torch.manual_seed(0)
    flow = torch.randn(2, 2, 16, 24) * 3
    ours = flow_to_color(flow, max_magnitude=float(flow.norm(dim=1).max()))  # torchvision: batch maximum
    theirs = flow_to_image(flow)
    assert (ours.int() - theirs.int()).abs().max() <= 1


def test_no_motion_is_white_and_directions_have_distinct_hues():
    flow = torch.zeros(2, 3, 4)
    flow[:, 0, 0] = torch.tensor([1.0, 0.0])  # right
    flow[:, 0, 1] = torch.tensor([-1.0, 0.0])  # left
    flow[:, 0, 2] = torch.tensor([0.0, 1.0])  # down
    image = flow_to_color(flow)
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 4)
    assert image[:, 2, 3].tolist() == [255, 255, 255]
    colours = {tuple(image[:, 0, i].tolist()) for i in range(3)}
    assert len(colours) == 3


def test_vectors_beyond_max_magnitude_are_darkened():
    flow = torch.zeros(2, 1, 2)
    flow[0, 0, 0] = 1.0
    flow[0, 0, 1] = 3.0
    image = flow_to_color(flow, max_magnitude=1.0)
    assert image[:, 0, 1].float().max() < image[:, 0, 0].float().max()
    assert math.isclose(image[:, 0, 1].float().max().item(), 0.75 * 255, abs_tol=1)

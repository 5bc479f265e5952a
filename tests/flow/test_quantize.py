import torch

from mateffnet.flow import dequantize_flow, quantize_flow


def test_tsn_mapping_of_known_values():
    flow = torch.tensor([-25.0, -20.0, 0.0, 20.0, 30.0, 10.0])
    q = quantize_flow(flow, bound=20.0)
    assert q.dtype == torch.uint8
    assert q.tolist() == [0, 0, 128, 255, 255, round(255 * 30 / 40)]


def test_round_trip_error_is_at_most_half_a_step():
    bound = 20.0
    flow = torch.empty(2, 2, 16, 16).uniform_(-bound, bound)
    back = dequantize_flow(quantize_flow(flow, bound), bound)
    assert (back - flow).abs().max() <= bound / 255 + 1e-5


def test_bound_is_a_parameter():
    flow = torch.tensor([5.0])
    assert quantize_flow(flow, bound=5.0).item() == 255
    assert quantize_flow(flow, bound=10.0).item() == round(255 * 15 / 20)

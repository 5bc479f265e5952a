import pytest
import torch

from mateffnet.data.sampling import clip_indices, flow_indices, rgb_indices, segment_positions
from mateffnet.errors import MateffnetError


@pytest.mark.parametrize("positions, segments", [(164, 25), (72, 8), (280, 3), (9, 9), (25, 8)])
def test_test_mode_is_tsns_centred_sampling(positions, segments):
    tick = positions / float(segments)
    expected = [int(tick / 2.0 + tick * x) for x in range(segments)]  # TSN's _get_test_indices
    assert segment_positions(positions, segments, train=False).tolist() == expected


def test_train_mode_draws_one_position_inside_each_segment():
    generator = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(8)]
    for _ in range(400):
        positions = segment_positions(100, 8, train=True, generator=generator)
        for t, p in enumerate(positions.tolist()):
            assert int(t * 12.5) <= p < int((t + 1) * 12.5)
            seen[t].add(p)
    assert all(len(s) >= 12 for s in seen)  # every position of each segment gets drawn
    assert set().union(*seen) == set(range(100))  # including the tail TSN's integer split drops


def test_train_mode_is_reproducible_with_a_generator():
    a = segment_positions(300, 8, True, torch.Generator().manual_seed(3))
    b = segment_positions(300, 8, True, torch.Generator().manual_seed(3))
    c = segment_positions(300, 8, True, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_short_videos_repeat_positions_in_order():
    for train in (True, False):
        assert segment_positions(3, 8, train).tolist() in ([0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2, 2, 2])
        assert segment_positions(1, 5, train).tolist() == [0] * 5


def test_flow_stacks_stay_inside_the_n_minus_1_flows():
    num_frames = 164
    num_flows = num_frames - 1
    stacks = flow_indices(num_flows, 25, 10, train=False)
    assert stacks.shape == (25, 10)
    assert torch.equal(stacks[:, 1:] - stacks[:, :-1], torch.ones(25, 9, dtype=torch.long))  # consecutive
    assert stacks.max() < num_flows
    tick = (num_flows - 10 + 1) / 25
    assert stacks[:, 0].tolist() == [int(tick / 2 + tick * x) for x in range(25)]
    short = flow_indices(4, 3, 10, train=True)
    assert short.tolist() == [[0, 1, 2, 3, 3, 3, 3, 3, 3, 3]] * 3  # last flow repeated


def test_no_index_error_at_any_length():
    generator = torch.Generator().manual_seed(1)
    for num_frames in range(1, 41):
        for segments in (1, 3, 8, 25):
            for train in (True, False):
                rgb = clip_indices("rgb", num_frames, num_frames - 1, segments, train=train, generator=generator)
                assert rgb.shape == (segments,) and 0 <= rgb.min() and rgb.max() < num_frames
                assert torch.all(rgb[1:] >= rgb[:-1])
                if num_frames < 2:
                    continue
                for length in (1, 5, 10):
                    flow = clip_indices("flow", num_frames, num_frames - 1, segments, length, train, generator)
                    assert flow.shape == (segments, length)
                    assert 0 <= flow.min() and flow.max() < num_frames - 1


def test_errors():
    with pytest.raises(MateffnetError, match="no flow"):
        flow_indices(0, 8, 10, train=True)
    with pytest.raises(MateffnetError, match="no frames"):
        rgb_indices(0, 8, train=True)
    with pytest.raises(MateffnetError, match="unknown modality 'depth'"):
        clip_indices("depth", 10, 9, 8)

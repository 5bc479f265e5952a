import pytest
import torch

from mateffnet.errors import MateffnetError
from mateffnet.models.attention import MultiHeadSelfAttention


def test_attention_keeps_the_shape_and_its_weights_are_distributions():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(dim=8, heads=2)
    tokens = torch.randn(3, 5, 8)
    out = layer(tokens)
    assert out.shape == (3, 5, 8)
    assert layer.last_weights.shape == (3, 2, 5, 5)
    assert torch.allclose(layer.last_weights.sum(-1), torch.ones(3, 2, 5))


def test_attention_is_equivariant_to_the_order_of_segments():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(dim=8, heads=2).eval()
    tokens = torch.randn(1, 6, 8)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(layer(tokens)[:, order], layer(tokens[:, order]), atol=1e-6)


def test_the_residual_adds_the_tokens_back():
    torch.manual_seed(0)
    plain, residual = MultiHeadSelfAttention(8, 2), MultiHeadSelfAttention(8, 2, residual=True)
    residual.load_state_dict(plain.state_dict())
    tokens = torch.randn(2, 4, 8)
    assert torch.allclose(residual(tokens), tokens + plain(tokens), atol=1e-6)


def test_the_width_must_split_into_the_heads():
    with pytest.raises(MateffnetError, match="embed_dim 10 must be divisible by heads 3"):
        MultiHeadSelfAttention(10, 3)

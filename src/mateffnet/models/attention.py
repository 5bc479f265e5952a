"""Multi-head self-attention across a video's tokens (its T segments, or its T×h×w positions).

Written out rather than `nn.MultiheadAttention` so the per-head weights of the last forward pass are
kept for plotting (`last_weights`, shape (B, heads, tokens, tokens), rows sum to 1) and the module
exports plainly to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn

from mateffnet.errors import MateffnetError


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int = 512, heads: int = 2, residual: bool = False):
        super().__init__()
        if dim % heads:
            raise MateffnetError(f"embed_dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.residual = residual
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.last_weights: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax((query @ key.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)
        self.last_weights = weights.detach()
        attended = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
        attended = self.proj(attended)
        return tokens + attended if self.residual else attended

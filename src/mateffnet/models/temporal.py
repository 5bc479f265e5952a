"""Order-aware pieces of a stream: temporal position encodings of the segments and a learned-query readout.

The paper's stream (self-attention without position information, then the mean of the attended tokens)
is a function of the *set* of its segments: any permutation of the segments gives the same logits, so it
cannot use the order of segments across a clip. These options, off by default, change that:

- `TemporalEncoding("learned", dim, num_segments)`: one learned vector per segment index, added to the
  tokens before attention, initialised to the sinusoidal encoding below (a table of small random vectors
  barely moved under the paper's plain SGD: the stream stayed at chance on the demo's order classes).
  Trained at T = `num_segments`; for another T at test time the table is
  linearly interpolated over the segments' relative positions (the same as
  `F.interpolate(mode="linear", align_corners=False)`, written with plain tensor ops so it exports to ONNX
  with a dynamic segment count). At T = `num_segments` it is the table itself.
- `TemporalEncoding("sinusoidal", dim, num_segments)`: a fixed encoding of the segment's relative position
  in the video, u = (i + 0.5) / T in (0, 1): sin and cos of u·ω for dim/2 frequencies ω spaced
  geometrically from π to π·num_segments, the finest detail the training segments can resolve. It depends
  on where a segment sits in the video, not on T, so it needs no interpolation; higher frequencies than the
  training T resolves would take unseen, unrelated values between the training positions, and a stream
  tested at another T than it was trained at would lose what it learnt.
- `QueryReadout(dim)`: a learned query scores each token (dot product, softmax over tokens), and the
  readout is the weighted mean of the tokens; the query starts at zero, i.e. as the paper's mean. By
  itself it is still a function of the set of tokens (each token's weight depends only on that token):
  it keeps order only when the tokens carry their position (an encoding above).

With spatio-temporal tokens (T×h×w positions before pooling, segment-major) the encoding is per segment,
shared over the h×w positions of that segment: it tells *when* a position is, not *where*.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mateffnet.config import TEMPORAL_ENCODINGS
from mateffnet.errors import MateffnetError

LOWEST_FREQUENCY = math.pi  # radians per video length: half a period over the video


class TemporalEncoding(nn.Module):
    def __init__(self, kind: str, dim: int, num_segments: int = 8):
        super().__init__()
        if kind not in TEMPORAL_ENCODINGS[1:]:
            raise MateffnetError(f"temporal encoding must be one of {', '.join(TEMPORAL_ENCODINGS[1:])}, got {kind!r}")
        if dim % 2:
            raise MateffnetError(f"a temporal encoding needs an even embed_dim, got {dim}")
        self.kind = kind
        self.dim = dim
        low, high = LOWEST_FREQUENCY, LOWEST_FREQUENCY * max(num_segments, 2)
        frequencies = low * (high / low) ** (torch.arange(dim // 2) / max(dim // 2 - 1, 1))
        self.register_buffer("frequencies", frequencies, persistent=False)
        if kind == "learned":
            self.table = nn.Parameter(self.sinusoidal(num_segments))

    def sinusoidal(self, segments: int) -> torch.Tensor:
        """(segments, dim): sin and cos of u·ω at the segments' relative positions u = (i + 0.5) / T."""
        relative = (torch.arange(segments, device=self.frequencies.device, dtype=torch.float32) + 0.5) / segments
        angles = relative[:, None] * self.frequencies[None]
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)

    def encoding(self, segments: int) -> torch.Tensor:
        """(segments, dim): the vector added to each segment's token(s)."""
        return interpolate_table(self.table, segments) if self.kind == "learned" else self.sinusoidal(segments)

    def forward(self, tokens: torch.Tensor, segments: int) -> torch.Tensor:
        """(B, T·P, dim) tokens, P positions per segment (1, or h·w), segment-major → the same plus the encoding."""
        per_segment = tokens.shape[1] // segments
        encoding = self.encoding(segments).to(tokens.dtype)
        return tokens + encoding.repeat_interleave(per_segment, dim=0)[None]


def interpolate_table(table: torch.Tensor, segments: int) -> torch.Tensor:
    """(T0, dim) → (segments, dim), linear over relative positions (align_corners=False, edges clamped)."""
    trained = table.shape[0]
    position = (torch.arange(segments, device=table.device, dtype=torch.float32) + 0.5) * (trained / segments) - 0.5
    position = position.clamp(0, trained - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=trained - 1)
    fraction = (position - low.float())[:, None].to(table.dtype)
    return table[low] * (1 - fraction) + table[high] * fraction


class QueryReadout(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.scale = dim**-0.5
        self.last_weights: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) → (B, dim); `last_weights` keeps the (B, N) weights of the last call."""
        weights = torch.softmax((tokens @ self.query) * self.scale, dim=1)
        self.last_weights = weights.detach()
        return (weights[..., None] * tokens).sum(dim=1)

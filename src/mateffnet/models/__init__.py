"""MAT-EffNet models: the per-stream network, its backbones and weights, and two-stream fusion."""

from mateffnet.models.backbones import PAPER_INPUT_SIZE, create_backbone
from mateffnet.models.streamnet import StreamConfig, StreamNet
from mateffnet.models.twostream import TwoStreamNet, fuse_probabilities

__all__ = ["PAPER_INPUT_SIZE", "StreamConfig", "StreamNet", "TwoStreamNet", "create_backbone", "fuse_probabilities"]

"""Test-time scoring and the two-stream evaluation protocol.

A test item is a video's V views (crops, optionally mirrored) of T evenly spaced segments:
(V, T, C, H, W). Each view is one forward pass of T segments (attention spans all T); the video's score
for a stream is the mean over views of the softmax probabilities; the fused score is the weighted mean of
the streams' scores (MAT-EffNet: 1:1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mateffnet.engine import distributed


class IndexedDataset(Dataset):
    """Yields (index, *item) so scores gathered from several processes can be put back in order."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (index, *self.dataset[index])


@torch.no_grad()
def collect_scores(model, loader, ctx: distributed.Distributed, precision: torch.dtype = torch.float32,
                   desc: str = "evaluate", progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean softmax over views for every video of `loader` (an IndexedDataset loader).

    Returns (indices, scores (N, K) float32, labels (N,)) ordered by dataset index, on every rank.
    """
    was_training = model.training
    model.eval()
    device = ctx.device
    indices, scores, labels = [], [], []
    for index, views, label in tqdm(loader, desc=desc, leave=False, disable=not (progress and ctx.is_main),
                                    dynamic_ncols=True):
        views = views.to(device, non_blocking=True)
        batch, num_views = views.shape[:2]
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            logits = model(views.flatten(0, 1))
        probabilities = logits.float().softmax(-1).view(batch, num_views, -1).mean(1)
        indices.append(index.numpy())
        scores.append(probabilities.cpu().numpy())
        labels.append(np.asarray(label))
    model.train(was_training)
    local = (np.concatenate(indices), np.concatenate(scores), np.concatenate(labels)) if indices else (
        np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    parts = distributed.gather_objects(ctx, local)
    all_indices = np.concatenate([p[0] for p in parts])
    order, first = np.unique(all_indices, return_index=True)  # DistributedSampler pads with repeats
    return order, np.concatenate([p[1] for p in parts if len(p[1])])[first], np.concatenate([p[2] for p in parts])[first]

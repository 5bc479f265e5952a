"""Small in-memory datasets for tests: class k of BrightnessClips is a brightness level plus noise."""

import torch
from torch.utils.data import Dataset


class BrightnessClips(Dataset):
    def __init__(self, count=32, classes=4, segments=2, channels=3, size=32, views=None, seed=0,
                 interrupt_at_epoch=None, nan_at_epoch=None):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % classes
        base = (self.labels.float() + 0.5) * (200 / classes)
        noise = torch.randn(count, segments, channels, size, size, generator=generator) * 25
        self.clips = (base.view(-1, 1, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
        self.views, self.epoch, self.interrupt_at_epoch = views, 0, interrupt_at_epoch
        self.seed, self.nan_at_epoch = seed, nan_at_epoch

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        if self.interrupt_at_epoch is not None and self.epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt(f"simulated kill at the start of epoch {self.epoch + 1}")
        clip = self.clips[index]
        if self.nan_at_epoch is not None and self.epoch >= self.nan_at_epoch:
            clip = torch.full(clip.shape, float("nan"))  # float clips in 0–255 units are valid model input
        if self.views is not None:
            return torch.stack([clip, clip.flip(-1)][: self.views]), int(self.labels[index])
        # augmentation drawn from (seed, epoch, index), as the real datasets do: a flip
        flip = torch.randint(2, (1,), generator=torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**31))
        return (clip.flip(-1) if flip.item() else clip), int(self.labels[index])


def ddp_train_worker(rank, world_size, port, config, out_dir, classes):
    """One process of a CPU (gloo) DDP run, as torchrun would start it."""
    import os

    from mateffnet.engine.train import train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(config, out_dir, train_set=BrightnessClips(32), class_names=classes, progress=False)


if __name__ == "__main__":  # one process of a torchrun job: python -m torch.distributed.run ... toydata.py CONFIG OUT
    import sys

    from mateffnet.config import load_config
    from mateffnet.engine.train import train

    torch.set_num_threads(1)
    train(load_config(sys.argv[1]), sys.argv[2], train_set=BrightnessClips(32),
          class_names=[f"level{i}" for i in range(4)], progress=False)

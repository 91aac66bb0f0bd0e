"""Augmentation of training batches: the official pipeline of Kalra & Barkeshli.

Their code (`vision/phase-diagrams/utils/data_utils.py`, `transform`) augments every
training batch afresh, in this order:

1. flip: each image is mirrored left-right with probability 1/2;
2. crop: each image is zero-padded by `crop_padding` pixels on every side (4 in the
   official runs; zero is the mean of standardized data) and cut back to its size at
   offsets drawn uniformly from 0 .. 2 * crop_padding - 1 on each axis (JAX's
   `randint(0, 2 * pad)`, so a shift of +pad never occurs);
3. mixup: example i is mixed with example B-1-i of the batch (the reversed batch; the
   middle example of an odd batch with itself) with weight lambda_i ~ U(0, 1), labels
   mixed alike into soft labels (N, classes).

Here the draws of update t come from generators seeded by (`data_seed`, t) alone, one
per transform, on the CPU in float64: an update's augmented batch is a pure function
of the data seed and the update number (as `trials.problem.Problem.batch` is for the
examples), the same on any device, packed or alone, resumed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trials.config import TrialConfig

__all__ = ["Augmentation"]

# Tags that give each transform its own stream of draws (switching one transform on or
# off leaves the others' draws unchanged).
_FLIP, _CROP, _MIXUP = 1, 2, 3


def _generator(data_seed: int, t: int, tag: int) -> torch.Generator:
    """A CPU generator for transform `tag` at update `t`, from the data seed alone."""
    state = np.random.SeedSequence((data_seed, t, tag)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class Augmentation:
    """Which transforms run on training batches (the fields `augment_*` of a config)."""

    flip: bool = False
    crop_padding: int = 0
    mixup: bool = False

    @classmethod
    def of(cls, config: TrialConfig) -> Augmentation:
        """The augmentation a trial's config asks for."""
        return cls(config.augment_flip, config.augment_crop_padding, config.augment_mixup)

    @property
    def active(self) -> bool:
        """Whether any transform runs."""
        return self.flip or self.crop_padding > 0 or self.mixup

    @property
    def needs_images(self) -> bool:
        """Whether a transform works on (C, H, W) images (flip and crop do)."""
        return self.flip or self.crop_padding > 0

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, data_seed: int, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented batch of update `t`: inputs `x` (B, ...) and labels `y` (B,) in;
        inputs of the same shape and labels out, soft (B, num_classes) in x's dtype with
        mixup, else `y` itself."""
        b = len(x)
        if self.flip:
            mirror = torch.rand(b, generator=_generator(data_seed, t, _FLIP), dtype=torch.float64)
            mirror = (mirror < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(mirror, x.flip(-1), x)
        if self.crop_padding:
            x = self._crop(x, _generator(data_seed, t, _CROP))
        if self.mixup:
            gen = _generator(data_seed, t, _MIXUP)
            lam = torch.rand(b, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
            onehot = F.one_hot(y, num_classes).to(x.dtype)
            lam_x = lam.view(b, *([1] * (x.ndim - 1)))
            x = lam_x * x + (1 - lam_x) * x.flip(0)
            y = lam[:, None] * onehot + (1 - lam[:, None]) * onehot.flip(0)
        return x, y

    def _crop(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Each image of `x` (B, C, H, W) cut from its zero-padded copy at its own offset."""
        b, c, h, w = x.shape
        pad = self.crop_padding
        offsets = torch.randint(0, 2 * pad, (b, 2), generator=gen).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

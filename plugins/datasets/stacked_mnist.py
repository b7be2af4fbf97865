"""`stacked-mnist:DIR`: three independently drawn MNIST digits as the R, G, B channels of one image.

The mode-collapse benchmark of Metz et al. (Unrolled GANs, 2017), used by VEEGAN and PacGAN:
each image's mode is its digit triple, so there are 10³ = 1000 modes. Images are 28×28×3, the
digits' own size: no resampling blurs them, gand's MNIST classifier (28×28) reads each channel
as it was trained, and the 28 px DCGAN (the lecture's MNIST network) is the one that trains.

The digits are read once into device memory; each sample draws three independent indices with
torch's global RNG, so a job's seed fixes the data it sees and nothing goes through a loader.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from gand.api import Batch, DataInfo, DataSource
from gand.errors import UsageError
from gand_plugins.datasets.common import _check_image_shape, _spec, _u8_to_unit
from gand_plugins.datasets.mnist import Mnist, _check_labels, _read_idx_body

MODES = 1000
# A triple (r, g, b) is the label 100·r + 10·g + b: its digits read left to right.
PLACES = (100, 10, 1)


class StackedSource(DataSource):
    """The single digits in device memory; every sample stacks three of them."""

    def __init__(self, info: DataInfo, digits: torch.Tensor, labels: torch.Tensor, device):
        self.info = info
        self.digits = digits.to(device)   # (N, H, W) in [-1, 1]
        self.labels = labels.to(device)   # (N,) digit classes
        self._places = torch.tensor(PLACES, device=self.digits.device)

    def sample(self, n: int) -> Batch:
        idx = torch.randint(0, self.digits.shape[0], (n, 3), device=self.digits.device)
        return Batch(self.digits[idx], (self.labels[idx] * self._places).sum(1))


class StackedMnist(Mnist):
    name = "stacked-mnist"
    help = ("Stacked MNIST: three random MNIST digits as the RGB channels of a 28×28 image, "
            "1000 modes (digit triples); labels are 100·R+10·G+B: stacked-mnist:DIR of IDX files")
    needs_arg = True

    @staticmethod
    def _download_allowed() -> bool:
        return False  # built from the MNIST files at hand only

    def _mnist(self, call, *args):
        """Runs one of mnist's readers, its errors renamed for this dataset."""
        try:
            return call(*args)
        except UsageError as e:
            text = str(e).replace("dataset mnist", f"dataset {self.name}", 1)
            text = text.replace("--data mnist:DIR", f"--data {self.name}:DIR")
            raise UsageError(text.replace(" (or set GAND_ALLOW_DOWNLOAD=1 to download)", "")) from None

    def describe(self, arg: Optional[str]) -> DataInfo:
        info = self._mnist(super().describe, arg)
        _, rows, cols = info.shape
        return DataInfo(spec=_spec(self.name, arg), kind="image", shape=(3, rows, cols),
                        num_classes=MODES, size=None,
                        extra={"stacked_modes": MODES, "source_images": info.size})

    def load(self, arg, info, shape, device) -> DataSource:
        c, h, w = _check_image_shape(info.spec, shape)
        if c != 3:
            raise UsageError(f"dataset {info.spec}: its images are 3-channel (one digit per "
                             f"channel); cannot load them at shape {tuple(shape)}")
        digits, labels = [], []
        for images, labs, n, rows, cols in self._mnist(self._headers, self._mnist(self._locate, arg)):
            pix = self._mnist(_read_idx_body, images, 16, n * rows * cols).reshape(n, rows, cols)
            digits.append(torch.from_numpy(pix.copy()))
            lab = self._mnist(_read_idx_body, labs, 8, n)
            self._mnist(_check_labels, labs, lab)
            labels.append(torch.from_numpy(lab.astype("int64")))
        device = torch.device(device)
        x = _u8_to_unit(torch.cat(digits).to(device))  # uint8 over the bus, converted there
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x[:, None], size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False)[:, 0].clamp_(-1.0, 1.0)
        return StackedSource(info, x, torch.cat(labels), device)

"""Pictures of what a generator makes: image grids, and scatter/histograms for vector data."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

HQ_STDS = 3.0  # the coverage metric's high-quality radius, in stds (gand_plugins.metrics)


def save_grid(images: torch.Tensor, path: Path, nrow: Optional[int] = None) -> Path:
    """A PNG grid of images in [-1, 1]."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image(images.detach().float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1))
    return path


def save_images(images: torch.Tensor, folder: Path) -> Path:
    """One PNG per image, numbered."""
    from torchvision.utils import save_image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images.detach().float().cpu()):
        save_image(img, folder / f"{i:05d}.png", normalize=True, value_range=(-1, 1))
    return folder


def save_vector_plot(fake: torch.Tensor, real: torch.Tensor, path: Path, title: str = "",
                     modes: Optional[Sequence[Sequence[float]]] = None,
                     std: Optional[float] = None) -> Path:
    """Generated vs real: a histogram for 1-D data, a scatter of the first two dims otherwise.

    With a mixture's `modes` and `std` (ring8, grid25), each mode gets the circle of radius
    3·std inside which a sample counts as high-quality for the coverage metric, and the legend
    says how many of the plotted samples fall inside one."""
    # matplotlib's object API, not pyplot: the trainer draws these in a background thread, and
    # pyplot's figure registry is shared by all threads.
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    path.parent.mkdir(parents=True, exist_ok=True)
    f, r = fake.detach().float().cpu().numpy(), real.detach().float().cpu().numpy()
    fig = Figure(figsize=(5, 5), dpi=80)
    ax = fig.subplots()
    if f.shape[1] == 1:
        lo, hi = float(np.min([f.min(), r.min()])), float(np.max([f.max(), r.max()]))
        bins = np.linspace(lo, hi, 50)
        ax.hist(r[:, 0], bins=bins, density=True, alpha=0.5, color="red", label="real")
        ax.hist(f[:, 0], bins=bins, density=True, alpha=0.5, color="blue", label="generated")
    else:
        ax.scatter(r[:, 0], r[:, 1], s=2, c="red", alpha=0.4, label="real")
        ax.scatter(f[:, 0], f[:, 1], s=2, c="blue", alpha=0.4, label="generated")
        if modes is not None and std:
            m = np.asarray(modes, dtype=np.float64)[:, :2]
            d = np.linalg.norm(f[:, None, :2] - m[None], axis=2).min(1)
            inside = 100.0 * float((d <= HQ_STDS * std).mean())
            for i, (cx, cy) in enumerate(m):
                # Drawn over the dots (zorder), so a crowded mode still shows its circle.
                ax.add_patch(Circle((cx, cy), HQ_STDS * std, fill=False, color="black",
                                    linewidth=1.0, zorder=3,
                                    label=(f"{HQ_STDS:g} std: {inside:.1f}% of generated "
                                           f"inside" if i == 0 else None)))
        ax.set_aspect("equal")
    # Below the axes: inside, it would hide a mode of ring8 or grid25.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=7,
              frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path

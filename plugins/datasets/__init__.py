"""gand's built-in dataset types: gauss1d, ring8, grid25, mnist, stacked-mnist and folder.

Addressed in `--data` as `NAME` or `NAME:ARG`; a plain path goes to `folder` (the core's spec
resolution does that routing). `describe` checks a spec and reports its DataInfo without loading
pixel data; `load` reads the data at the shape the variant asks for and hands back a source that
keeps everything in device memory.

Nothing here touches the network, except `mnist` when GAND_ALLOW_DOWNLOAD=1 is set and the
folder holds no IDX files (`stacked-mnist` never downloads).
"""
from __future__ import annotations

from gand.hookspecs import hookimpl
from gand_plugins.datasets.folder import Folder
from gand_plugins.datasets.mnist import Mnist
from gand_plugins.datasets.stacked_mnist import StackedMnist
from gand_plugins.datasets.synthetic import Gauss1d, Grid25, Ring8

__all__ = ["Folder", "Gauss1d", "Grid25", "Mnist", "Ring8", "StackedMnist"]


@hookimpl
def gand_register_datasets():
    return [Gauss1d, Ring8, Grid25, Mnist, StackedMnist, Folder]

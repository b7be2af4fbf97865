"""Feature extractors for FID/KID: InceptionV3 from a local weights file, and gand's MNIST CNN.

Nothing here downloads: InceptionV3's architecture comes from torchvision with `weights=None`
and its weights from a file the user provides (GAND_INCEPTION_WEIGHTS, the config key
`inception_weights`, or torch hub's cache); when there is none the error names the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gand.errors import UsageError

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's IMAGENET1K_V1 weights
CHUNK = 128


class Extractor:
    """Maps images in [-1, 1] to feature vectors; `predict` gives class probabilities if it can."""

    name: str = ""
    dim: int = 0
    device: torch.device = torch.device("cpu")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature rows (float64 on the CPU, ready for covariance maths), computed in chunks."""
        out = [self._features(x[i:i + CHUNK].to(self.device)).double().cpu()
               for i in range(0, x.shape[0], CHUNK)]
        return torch.cat(out)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise UsageError(f"feature extractor {self.name} does not classify")


class ClassifierExtractor(Extractor):
    """The MNIST CNN: penultimate layer as features, softmax as class predictions."""

    name = "mnist-classifier"

    def __init__(self, path: Path, device: Any = "cpu"):
        from gand.evaluation import classifier

        self.device = torch.device(device)
        self.model, self.meta = classifier.load(path, self.device)
        self.path = Path(path)
        self.dim = classifier.FEATURES
        self.num_classes = int(self.meta.get("num_classes", 10))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = [F.softmax(self.model(x[i:i + CHUNK].to(self.device)).float(), 1).cpu()
               for i in range(0, x.shape[0], CHUNK)]
        return torch.cat(out)


def inception_weights_path() -> Path:
    """Where InceptionV3 weights are looked for: the setting, else torch hub's cache."""
    from gand import settings

    configured = settings.resolve()["inception_weights"].value
    if configured:
        return Path(configured).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


class InceptionExtractor(Extractor):
    """torchvision's InceptionV3 with local weights; the 2048-d pool output is the feature."""

    name = "inception"
    dim = 2048

    def __init__(self, path: Optional[Path] = None, device: Any = "cpu"):
        from torchvision.models import inception_v3

        path = Path(path) if path is not None else inception_weights_path()
        if not path.is_file():
            raise UsageError(
                f"InceptionV3 weights not found at '{path}': gand never downloads them; put "
                f"torchvision's {INCEPTION_FILE} there, or set GAND_INCEPTION_WEIGHTS (or "
                f"`inception_weights` in the config file) to the file, or use "
                f"--classifier for digit data")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UsageError(f"InceptionV3 weights '{path}' cannot be read: {type(e).__name__}") from None
        # weights=None: the architecture only, so torchvision never reaches for the network.
        # The Google weights expect inputs in [-1, 1], which is what gand's images are.
        model = inception_v3(weights=None, aux_logits=True, init_weights=False,
                             transform_input=False)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            first = str(e).strip().splitlines()[0]
            raise UsageError(f"'{path}' does not hold InceptionV3 weights: {first}") from None
        model.AuxLogits = None
        model.aux_logits = False
        model.fc = nn.Identity()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.path = path

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.model(x)


def extractor(name: str, *, classifier: Optional[str] = None, device: Any = "cpu") -> Extractor:
    """The named extractor, ready to use; a UsageError says what is missing."""
    if name == ClassifierExtractor.name:
        if not classifier:
            raise UsageError("extractor mnist-classifier needs a classifier file: pass "
                             "--classifier FILE (train one with `gand eval train-classifier`)")
        return ClassifierExtractor(Path(classifier), device)
    if name == InceptionExtractor.name:
        return InceptionExtractor(None, device)
    raise UsageError(f"unknown feature extractor {name!r}; expected inception or mnist-classifier")


def default_extractor(classifier: Optional[str]) -> str:
    """mnist-classifier when the job has a classifier (digit data), else inception."""
    return ClassifierExtractor.name if classifier else InceptionExtractor.name


"""Named recipes (`gand submit … --preset NAME`): a set of option values applied over the
variant's defaults for the data, and under explicit `--set` values and flags.

`lecture` keeps the lecture's own 1-D GAN recipe one flag away, so its mode collapse on ring8
and grid25 can still be shown beside gand's defaults (docs/quality.md has the numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from gand.errors import UsageError, one_of


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    # Option values, as `--set` would give them; a key the job does not declare (a loss option
    # with another loss) is left out.
    settings: dict[str, Any] = field(default_factory=dict)
    variants: Optional[frozenset[str]] = None  # the variants it suits; None: every one
    steps: Optional[int] = None                # a default --steps, if the recipe has one

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "settings": dict(self.settings),
                "variants": sorted(self.variants) if self.variants is not None else None,
                "steps": self.steps}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("default", "gand's defaults for the variant and data (the same as no preset)"),
    Preset("lecture",
           "the lecture's 1-D GAN: 5 D steps per G step, Adam 1e-3 (0.9, 0.999), batch 64, "
           "hidden 50, no label smoothing, no EMA, one G and no tricks (collapses on ring8/grid25)",
           settings={"d_steps": 5, "lr": 1e-3, "lr_g": 0.0, "lr_d": 0.0, "beta1": 0.9,
                     "beta2": 0.999, "batch_size": 64, "hidden": 50, "layers": 2,
                     "label_smoothing": False, "ema": 0.0, "pack": 1, "mbstd": 0,
                     "instance_noise": 0.0, "d_norm": "none", "lr_decay": 0.0, "components": 0},
           variants=frozenset({"gan"})),
)}


def get(name: str, variant: str) -> Preset:
    """The preset `name` for `variant`; a UsageError listing the presets otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        raise UsageError(f"--preset {name!r} is unknown; presets: {one_of(PRESETS)} "
                         f"(`gand plugins presets` describes them)")
    if preset.variants is not None and variant not in preset.variants:
        raise UsageError(f"--preset {name} is a recipe for {one_of(preset.variants)}, not "
                         f"{variant}; presets for any variant: "
                         f"{one_of(p.name for p in PRESETS.values() if p.variants is None)}")
    return preset

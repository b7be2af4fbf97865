"""gan's mixture of generators (`--set components=k`, plugins/gan.py).

What the option promises, checked on the networks themselves: every component is drawn with
probability 1/k from the ordinary N(0, I) prior; a component is a generator of its own (the
same continuous latent lands elsewhere under another component, so G can jump between modes
with no trail between them); and a latent too small to carry a component is refused at submit.
"""
from __future__ import annotations

import pytest
import torch

from gand.engine.trainer import Run
from gand.errors import UsageError
from gand.jobspec import build_config

pytestmark = pytest.mark.usefixtures("one_thread")


def gan(registry, *sets: str, data: str = "ring8") -> Run:
    cfg = build_config(registry, variant="gan", data=data, steps=10, sets=list(sets), seed=0,
                       device="cpu", checkpoint_every=0, sample_every=0)
    return Run.build(cfg, registry)


def test_components_are_drawn_uniformly_from_the_normal_prior(registry):
    G = gan(registry, "components=8", "ema=0").models.G
    z = torch.randn(80_000, G.net[0].in_features + 1, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(G.component(z), minlength=8).float()
    # 10,000 expected each; the binomial std is under 100, so 3% is over 3 std on either side.
    assert counts.numel() == 8
    assert ((counts - 10_000).abs() < 300).all(), counts.tolist()


def test_a_component_moves_the_same_continuous_latent_elsewhere(registry):
    G = gan(registry, "components=8", "ema=0").models.G
    z = torch.randn(2000, G.net[0].in_features + 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = G(z)
        comp = G.component(z)
        # Move every latent to the next component's slice of z₀, keeping the rest of z.
        edges = torch.distributions.Normal(0.0, 1.0).icdf((comp + 1.5).clamp(max=7.5) / 8)
        moved = z.clone()
        moved[:, 0] = edges
        keep = comp < 7
        assert torch.equal(G.component(moved)[keep], comp[keep] + 1)
        shift = (G(moved) - out)[keep].norm(dim=1)
        # The continuous part enters at a tenth of its scale: within a component, samples
        # sit close together; another component's offset moves them much further.
        spread = (out[comp == 0] - out[comp == 0].mean(0)).norm(dim=1).mean()
    assert shift.median() > 3 * spread


def test_without_components_g_takes_the_whole_latent(registry):
    plain = gan(registry, "components=0", "nz=10").models.G
    mixed = gan(registry, "components=8", "nz=10").models.G
    assert plain.net[0].in_features == 10 and mixed.net[0].in_features == 9
    assert not hasattr(plain, "offsets") and mixed.offsets.num_embeddings == 8


def test_components_need_a_latent_beyond_the_component_choice(registry):
    with pytest.raises(UsageError, match=r"components=4 needs nz of at least 2.*got nz=1"):
        build_config(registry, variant="gan", data="ring8", sets=["components=4", "nz=1"],
                     device="cpu")

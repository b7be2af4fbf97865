"""Every hook a gand plugin may implement.

A plugin is a module (or object) registered under the `gand` entry-point group; it implements
any of these hooks with `@gand.hookimpl`. Registration hooks return lists, which gand flattens;
a name registered twice is an error naming both plugins.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gand")
hookimpl = pluggy.HookimplMarker("gand")


@hookspec
def gand_register_variants() -> list:
    """Register GAN variants.

    :return: a list of :class:`gand.api.Variant` subclasses, each with a unique ``name``.

    Result: every plugin's list, flattened. Called once when the plugin manager loads, in the
    CLI (to validate ``gand submit``) and in each worker (to build the job's variant).
    """


@hookspec
def gand_register_losses() -> list:
    """Register adversarial losses and the regularisers that join them.

    :return: a list of :class:`gand.api.Loss` subclasses, each with a unique ``name`` and an
        ``output`` kind ("logits" or "critic") that decides which variants it combines with,
        and/or :class:`gand.api.Regularizer` subclasses, which users add to a loss as
        ``--loss LOSS+NAME[+NAME…]``. Names are unique across both kinds.

    Result: every plugin's list, flattened. Called once when the plugin manager loads.
    """


@hookspec
def gand_register_datasets() -> list:
    """Register dataset types, addressed in ``--data`` as ``NAME`` or ``NAME:ARG``.

    :return: a list of :class:`gand.api.DatasetType` subclasses, each with a unique ``name``.

    Result: every plugin's list, flattened. Called once when the plugin manager loads. The
    dataset type named ``folder`` also receives specs that are plain paths.
    """


@hookspec
def gand_register_metrics() -> list:
    """Register metrics that measure a generator (FID, mode coverage...).

    :return: a list of :class:`gand.api.Metric` subclasses, each with a unique ``name``, the
        data kinds it measures, and for each value it reports which way is better.

    Result: every plugin's list, flattened. Called once when the plugin manager loads, in the
    CLI (to validate ``--eval-every``/``--best-by`` and run ``gand eval``) and in each worker
    (to evaluate a job every ``--eval-every`` steps).
    """

"""The registry of distillation schemes (``[distill] scheme``): name -> the distiller built
from a trial's ``SchemeInputs``. A new scheme is a module and one entry here."""

from __future__ import annotations

from collections.abc import Callable

from naskd.distill.adversarial import Adversarial
from naskd.distill.base import Distiller, SchemeInputs
from naskd.distill.born_again import BornAgain
from naskd.distill.mutual import Mutual
from naskd.distill.offline import Offline
from naskd.distill.self_distill import SelfDistill

SCHEMES: dict[str, Callable[[SchemeInputs], Distiller]] = {
    "offline": Offline.from_inputs,
    "mutual": Mutual.from_inputs,
    "self": SelfDistill.from_inputs,
    "born_again": BornAgain.from_inputs,
    "adversarial": Adversarial.from_inputs,
}


def make_distiller(inputs: SchemeInputs) -> Distiller:
    """The distiller of ``inputs.recipe.scheme`` for this trial."""
    return SCHEMES[inputs.recipe.scheme](inputs)

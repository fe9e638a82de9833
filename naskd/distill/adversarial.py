"""Data-free adversarial distillation, after DFAD (Fang et al. 2019): a generator maps noise to
inputs on which the frozen teacher and the student disagree most, and the student learns to
agree with the teacher on them. Disagreement is the L1 distance (mean absolute difference)
between their logits. The game alternates: every ``generator_every`` student steps one
generator step *maximises* it (the generator's own Adam, ``generator_lr``), and each student
step *minimises* it on fresh, detached generated inputs with the loop's optimizer.

No real sample reaches any model: the loop's batch only sets how many inputs are generated.
The study's cached teacher logits are for real rows and are never read; the teacher runs on
every generated batch. Both the generator's and the student's steps happen inside ``step``,
so both count in the trial's training time.

The generator (``naskd.distill.generator``) is a module of this distiller: the loop moves it to
the device and a rung checkpoint keeps its weights; its optimizer, the step counters and the
noise stream are this distiller's ``state_dict``, so a run continued from a rung ends bit for
bit as an uninterrupted one. The generator is dropped when the run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from naskd.config import DistillConfig
from naskd.distill.base import Distiller, SchemeInputs, TeacherSource, Terms
from naskd.distill.generator import Generator
from naskd.distill.teachers import combine
from naskd.errors import InvalidSpec

#: Offsets from ``recipe.seed`` of the generator's initial weights and of the noise stream, so
#: neither repeats the stream of the loop's batch order (seeded with ``recipe.seed`` itself).
WEIGHT_SEED, NOISE_SEED = 7, 11


def _cloned(value: Any) -> Any:
    """A copy of nested dicts / lists / tuples whose tensors are cloned (an optimizer's state
    dict shares its tensors with the live optimizer, which updates them in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    return value


class Adversarial(Distiller):
    """Args: the student, its recipe (``generator_lr``, ``generator_every``, ``latent_dim``,
    ``seed``; ``combine`` for several teachers) and the frozen teachers (at least one).

    ``generator_steps`` and ``student_steps`` count the steps taken (a continued run counts its
    earlier ones too)."""

    def __init__(self, student: nn.Module, recipe: DistillConfig, teachers: Sequence[TeacherSource]) -> None:
        if not teachers:
            raise InvalidSpec("adversarial (data-free) distillation needs a teacher for the student to match")
        if any(t.inputs is not None for t in teachers):
            # The generator makes inputs of the student's shape; a teacher that reads its own
            # view of the rows (cross-modal) has no view of generated inputs.
            raise InvalidSpec(
                "adversarial (data-free) distillation needs teachers that read the student's inputs, "
                "not a view of their own (cross-modal)"
            )
        self.student, self.recipe = student, recipe
        self.teachers = [t.model for t in teachers]
        self.weights = [t.weight for t in teachers]
        for teacher in self.teachers:
            teacher.eval()
        self.generator: Generator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.noise = torch.Generator().manual_seed(recipe.seed + NOISE_SEED)
        self.generator_steps = 0
        self.student_steps = 0
        self._frozen: list[tuple[nn.Parameter, bool]] | None = None

    @classmethod
    def from_inputs(cls, inputs: SchemeInputs) -> Adversarial:
        return cls(inputs.student, inputs.recipe, inputs.teachers)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, **({"generator": self.generator} if self.generator is not None else {})}

    def setup(self, x: torch.Tensor, probe: torch.Tensor) -> None:
        if self.generator is None:
            # Its own seed, in a forked RNG: the generator's weights do not depend on what ran
            # before, and building it leaves the global stream (the student's dropout, anything
            # built after) exactly where it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.recipe.seed + WEIGHT_SEED)
                self.generator = Generator(
                    self.recipe.latent_dim, tuple(x.shape[1:]), width=self.recipe.generator_width
                )
            self.generator.to(x.device)
            # Module.to moves parameters in place, so this optimizer still holds them after the
            # loop moves the modules again.
            self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.recipe.generator_lr)
        if self._frozen is None:
            # The teachers' weights never need gradients (the generator's step only needs them
            # with respect to its inputs); restored in close().
            self._frozen = [(p, p.requires_grad) for t in self.teachers for p in t.parameters()]
            for p, _ in self._frozen:
                p.requires_grad_(False)
        for teacher in self.teachers:
            teacher.eval()

    def train_mode(self) -> None:
        self.student.train()
        if self.generator is not None:
            self.generator.train()
        for teacher in self.teachers:
            teacher.eval()

    def _teacher(self, inputs: torch.Tensor) -> torch.Tensor:
        return combine([t(inputs) for t in self.teachers], self.weights, self.recipe.combine)

    def _z(self, batch: int, device: torch.device) -> torch.Tensor:
        # Drawn on the CPU from the distiller's own generator: the same noise on every device,
        # and its state is a plain tensor for the checkpoint.
        return torch.randn(batch, self.recipe.latent_dim, generator=self.noise).to(device)

    def _generator_step(self, batch: int, device: torch.device) -> None:
        """One step of the generator towards inputs where student and teacher disagree most."""
        assert self.generator is not None and self.optimizer is not None, "setup() builds the generator"
        # The student runs in eval mode here: in train mode its BatchNorm running statistics
        # would also absorb this extra batch (and dropout would draw from the global RNG), so
        # the generator step would change the student beyond the one update the loop makes.
        # The generator then searches where the student as it is scored (eval mode) disagrees.
        # (DFAD keeps the student in train mode; on MNIST-1D neither mode did consistently
        # better: 34% vs 38% with a learnt output scale, 47% vs 41% without, one seed each.)
        was_training = self.student.training
        self.student.eval()
        try:
            fake = self.generator(self._z(batch, device))
            gap = F.l1_loss(self.student(fake).float(), self._teacher(fake).float())
            params = [p for p in self.generator.parameters() if p.requires_grad]
            # Gradients with respect to the generator's parameters only: nothing accumulates in
            # the student's (or the teacher's) .grad, so this step cannot leak into the student
            # update even without the loop's zero_grad before its own backward.
            autocast_off = (
                torch.autocast(device.type, enabled=False)
                if torch.is_autocast_enabled(device.type)
                else contextlib.nullcontext()
            )
            with autocast_off:
                grads = torch.autograd.grad(-gap, params)
                for p, g in zip(params, grads):
                    p.grad = g
                self.optimizer.step()
        finally:
            # The loop's optimizer holds the generator's parameters too (they are in modules()
            # for the device move and the checkpoint): with no gradient it skips them, so only
            # this step ever moves the generator. (The loop's zero_grad(set_to_none=True) before
            # its backward would clear them as well; this does not rely on it. The student's
            # loss gives them none: its generated inputs are made under no_grad.)
            for p in self.generator.parameters():
                p.grad = None
            self.student.train(was_training)
        self.generator_steps += 1

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        assert self.generator is not None, "setup() builds the generator"
        # Only the batch's length is read (a training-mode BatchNorm needs two samples).
        batch, device = max(2, len(xb)), xb.device
        if self.student_steps % self.recipe.generator_every == 0:
            self._generator_step(batch, device)
        with torch.no_grad():  # detached: the student's loss must not train the generator
            fake = self.generator(self._z(batch, device))
            target = self._teacher(fake)
        logits = self.student(fake)
        self.student_steps += 1
        return logits, {"adv_l1": F.l1_loss(logits.float(), target.float())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator_steps": self.generator_steps,
            "student_steps": self.student_steps,
            "noise": self.noise.get_state(),
            "optimizer": _cloned(self.optimizer.state_dict()) if self.optimizer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.generator_steps, self.student_steps = int(state["generator_steps"]), int(state["student_steps"])
        self.noise.set_state(state["noise"].clone())
        if self.optimizer is not None and state.get("optimizer") is not None:
            # Cloned: Optimizer.load_state_dict keeps tensors already on the right device as
            # they are, and the steps after would update the saved state in place.
            self.optimizer.load_state_dict(_cloned(state["optimizer"]))

    def close(self) -> None:
        if self._frozen is not None:
            for p, flag in self._frozen:
                p.requires_grad_(flag)
            self._frozen = None

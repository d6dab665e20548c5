"""Held-out scores of a model next to classical baselines, with noise that never changes.

The measurements of evaluation batch ``b`` are drawn from a seed of their own and the
global RNG is left as it was, so evaluating does not change the training run. Every
score stands next to the best classical baseline (normalised adjoint, Tikhonov...)
fitted on other images than the evaluation ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..evaluation import Baseline, determined_region, fit_baselines, image_scores
from . import distributed
from .measuring import first_tensor, measure
from .plots import plot_reconstructions
from .seeding import STREAM_BASELINE_NOISE, STREAM_EVAL_NOISE, derive_seed

__all__ = ["BASELINE_BATCHES", "METRIC_NAMES", "Evaluator"]

#: what an evaluation measures per method (see :func:`~unrolled.evaluation.image_scores`)
METRIC_NAMES = ("psnr", "psnr_determined", "ssim")
#: training batches on which the classical baselines' weights are picked
BASELINE_BATCHES = 2


class Evaluator:
    """Scores of ``inference`` and of the baselines on ``physics``'s measurements.

    Args:
        physics: the measurement model.
        module: the model (unwrapped); put in eval mode while it is scored.
        eval_data: the default evaluation data (or ``None``).
        inference: ``y -> x_hat`` for evaluation.
        loss: ``(x_hat, x, y) -> scalar``: the training loss, for the baselines' level.
        baseline_batches: ``() -> iterator`` of the batches the ``"auto"`` baselines'
            weights are picked on.
        seed, device, max_val, baselines: as for the :class:`~unrolled.train.Trainer`.
    """

    def __init__(
        self,
        physics: nn.Module,
        module: nn.Module,
        eval_data: Iterable | None,
        *,
        inference: Callable[[Tensor], Tensor],
        loss: Callable[[Tensor, Tensor, Tensor], Tensor],
        baseline_batches: Callable[[], Iterator],
        seed: int,
        device: torch.device,
        max_val: float = 1.0,
        baselines: str | Sequence[Baseline] | None = "auto",
    ):
        if not (
            baselines is None
            or (isinstance(baselines, str) and baselines == "auto")
            or (
                isinstance(baselines, Sequence)
                and not isinstance(baselines, str)
                and all(isinstance(b, Baseline) for b in baselines)
            )
        ):
            raise TypeError(
                f"baselines: expected 'auto', None or a sequence of "
                f"unrolled.evaluation.Baseline, got {baselines!r}"
            )
        self.physics = physics
        self.module = module
        self.eval_data = eval_data
        self.inference = inference
        self.loss = loss
        self.baseline_batches = baseline_batches
        self.seed = seed
        self.device = device
        self.max_val = max_val
        #: the fitted baselines (``None`` until :meth:`fit_baselines` runs for "auto")
        self.baselines = None if baselines == "auto" else list(baselines or [])
        #: per baseline label, its scores on ``eval_data`` (after the first evaluation)
        self.scores: dict[str, dict] | None = None
        #: ``(label, loss)`` of the best baseline on the training batches
        self.loss_level: tuple[str, float] | None = None

    def seed_of(self, batch_index: int) -> int:
        """The seed of the noise of evaluation batch ``batch_index``: the same every time."""
        return derive_seed(self.seed, STREAM_EVAL_NOISE, batch_index)

    def evaluate(self, data: Iterable | None = None, *, max_batches: int | None = None) -> dict:
        """Scores over ``data`` (default ``eval_data``) of the model and of the best
        classical baseline: mean PSNR over the whole image and over the determined region
        (:func:`~unrolled.evaluation.determined_region`), and SSIM.

        The measurements of batch ``b`` are drawn with :meth:`seed_of` ``(b)`` and the
        global RNG is left as it was. The baselines are scored once, on the first call
        over ``eval_data`` (:attr:`scores`). Returns ``{"psnr", "psnr_determined",
        "ssim", "n"}`` and, with baselines, ``"baseline"`` (the best by whole-image
        PSNR), ``"psnr_baseline"``, ``"psnr_determined_baseline"``, ``"ssim_baseline"``.
        """
        default = data is None
        data = self.eval_data if data is None else data
        if data is None:
            raise ValueError("data: expected evaluation data (eval_data is None)")
        check_int("max_batches", max_batches, minimum=1, allow_none=True)
        score_baselines = not default or self.scores is None
        baselines = self.fit_baselines() if score_baselines else []
        # per method (the model, then each baseline): sums of the three metrics; then n
        sums = torch.zeros(3 * (1 + len(baselines)) + 1, dtype=torch.float64, device=self.device)
        rank, world = distributed.rank(), distributed.world_size()
        with self._eval_mode(), torch.no_grad():
            torch.manual_seed(derive_seed(self.seed, STREAM_EVAL_NOISE))
            for b, batch in enumerate(data):
                if max_batches is not None and b >= max_batches:
                    break
                if b % world != rank:
                    continue  # batches are shared out over the processes
                x = first_tensor(batch, "eval_data").to(self.device)
                y = measure(self.physics, x, self.seed_of(b), self.device)
                region = determined_region(self.physics, x.shape).to(self.device)
                estimates = [self.inference(y)]
                estimates += [baseline(self.physics, y) for baseline in baselines]
                for i, x_hat in enumerate(estimates):
                    scores = image_scores(x_hat, x, region, self.max_val)
                    sums[3 * i : 3 * i + 3] += scores.sum(1)
                sums[-1] += x.shape[0]
        sums = distributed.all_reduce_sum(sums)
        n = int(sums[-1].item())
        if n == 0:
            raise ValueError("data: the evaluation data yielded no batch")
        means = (sums[:-1] / n).view(-1, 3).tolist()
        result = dict(zip(METRIC_NAMES, means[0], strict=True), n=n)
        scores = {
            b.label: dict(zip(METRIC_NAMES, m, strict=True))
            for b, m in zip(baselines, means[1:], strict=True)
        }
        if default and score_baselines:
            self.scores = scores
        if not score_baselines:
            scores = self.scores
        if scores:
            label = max(scores, key=lambda k: scores[k]["psnr"])
            result["baseline"] = label
            result.update({f"{k}_baseline": v for k, v in scores[label].items()})
        return result

    def fit_baselines(self) -> list[Baseline]:
        """The classical baselines the model is compared with (the ``baselines``
        argument; ``"auto"``: each of :data:`~unrolled.evaluation.BASELINES` with its
        weight picked on the first two of ``baseline_batches()``, measured with their own
        noise seed: never on the evaluation images). Fitted once; under DDP the weights
        of process 0 are used."""
        if self.baselines is not None:
            return self.baselines
        pairs = []
        with torch.random.fork_rng(devices=self._cuda_devices()), torch.no_grad():
            batches = self.baseline_batches()
            for i, batch in zip(range(BASELINE_BATCHES), batches, strict=False):
                x = first_tensor(batch).to(self.device)
                seed = derive_seed(self.seed, STREAM_BASELINE_NOISE, i)
                pairs.append((x, measure(self.physics, x, seed, self.device)))
        fitted = fit_baselines(self.physics, pairs, max_val=self.max_val)
        # The level a trained network must get below: the best baseline's training loss.
        losses = {
            b.label: sum(float(self.loss(b(self.physics, y), x, y)) for x, y in pairs) / len(pairs)
            for b in fitted
        }
        best = min(losses, key=losses.get)
        self.loss_level = (f"best baseline: {best}", losses[best])
        if distributed.is_distributed():
            # Every process scores with the weights of process 0.
            lams = torch.tensor(
                [b.lam if b.lam is not None else 0.0 for b in fitted],
                dtype=torch.float64,
                device=self.device,
            )
            torch.distributed.broadcast(lams, 0)
            fitted = [
                dataclasses.replace(b, lam=float(v)) if b.lam is not None else b
                for b, v in zip(fitted, lams.tolist(), strict=True)
            ]
        self.baselines = fitted
        return fitted

    def best_baseline(self) -> Baseline | None:
        """The baseline with the best held-out PSNR so far (None before any evaluation)."""
        if not self.scores or not self.baselines:
            return None
        label = max(self.scores, key=lambda k: self.scores[k]["psnr"])
        return next((b for b in self.baselines if b.label == label), None)

    def save_reconstructions(self, path: str | os.PathLike, data: Iterable, n: int = 4) -> Path:
        """Plot measurement / estimate / truth for the first batch of ``data``, with the
        first evaluation noise."""
        with self._eval_mode(), torch.no_grad():
            x = first_tensor(next(iter(data)), "data").to(self.device)
            y = measure(self.physics, x, self.seed_of(0), self.device)
            x_hat = self.inference(y)
            best = self.best_baseline()
            baseline = (best.label, best(self.physics, y)) if best is not None else None
        return plot_reconstructions(y, x_hat, x, path, n=n, max_val=self.max_val, baseline=baseline)

    @contextlib.contextmanager
    def _eval_mode(self):
        """The model in eval mode and the global RNG forked, both restored on exit."""
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.random.fork_rng(devices=self._cuda_devices()):
                yield
        finally:
            self.module.train(was_training)

    def _cuda_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

"""One training loop for both stages (LETTER-style ``fit``).

:func:`fit` runs epochs of shuffled mini-batches with Adam (or AdamW), linear warm-up then constant or cosine
learning rate, optional gradient clipping, a validation after every epoch, early stopping on one
validation metric, and keeps the best state. After every epoch it writes a checkpoint (model,
optimiser, schedule, random states, history) to ``work_dir``; a killed run started again with the
same ``work_dir`` resumes after the last finished epoch and ends with the same result.

The model owns its loss: ``loss_fn(idx, rng)`` returns a dict whose ``"loss"`` is minimised and
whose other entries are logged per epoch as ``loss_<name>`` (example-weighted means).

Under torchrun (:mod:`ungerlib.infra.distributed`) a loss function that computes its rank's part of
each global batch (``fit(..., ddp=True)``) trains with torch's ``DistributedDataParallel``: the same
global batches, gradients equal to the single-process ones up to float rounding, validation and
checkpoints on rank 0. ``Schedule.precision`` turns on bf16 autocast (:func:`ungerlib.infra.runtime.autocast`)
for the loss and the validation.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ungerlib.infra import distributed, runtime
from ungerlib.infra.store import atomic_torch_save


@dataclass
class Schedule:
    """The optimisation settings :func:`fit` reads (both stages' configs carry these fields)."""

    epochs: int
    batch_size: int
    lr: float
    warmup_steps: int
    lr_decay: str  # "none" | "cosine" (to zero at the last step)
    weight_decay: float
    patience: int  # epochs without a better validation metric before stopping
    clip_norm: float  # 0: no clipping
    precision: str = "fp32"  # "auto" | "fp32" | "bf16": autocast of the loss and validation (runtime.autocast)
    optimizer: str = "adam"  # "adam" (weight_decay as an L2 term) | "adamw" (decoupled weight decay)

    @classmethod
    def of(cls, stage_cfg: Any) -> "Schedule":
        """The schedule of a stage's config: its fields of these names (a field it lacks keeps its default)."""
        return cls(**{f: getattr(stage_cfg, f) for f in cls.__dataclass_fields__ if hasattr(stage_cfg, f)})


def lr_factor(step: int, warmup: int, decay: str, total: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "none":
        return 1.0
    if decay != "cosine":
        raise ValueError(f"lr_decay must be 'none' or 'cosine', got {decay!r}")
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator,
                     lengths: np.ndarray | None = None, bucket: int = 0) -> list[np.ndarray]:
    """One epoch's batches of example indices.

    Without ``lengths``: a random permutation cut into batches. With ``lengths`` and ``bucket`` > 0:
    the permutation is cut into chunks of ``bucket`` batches, each chunk is sorted by length and cut
    into batches, and the batches are shuffled, so a batch holds similar lengths (little padding)
    while every epoch still sees a fresh random grouping.
    """
    order = rng.permutation(n)
    if lengths is None or bucket <= 0:
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]
    out = []
    chunk = batch_size * bucket
    for s in range(0, n, chunk):
        part = order[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out.extend(part[b:b + batch_size] for b in range(0, len(part), batch_size))
    return [out[i] for i in rng.permutation(len(out))]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    epochs: int  # the schedule's cap

    def notes(self) -> dict[str, Any]:
        """What a run's info records of its training: epochs run, best epoch, stopped before the cap."""
        return {"epochs_run": len(self.history), "best_epoch": self.best_epoch,
                "early_stopped": len(self.history) < self.epochs}


class _Loss(torch.nn.Module):
    """``loss_fn`` as the forward of a module that holds the model: DistributedDataParallel synchronises
    the gradients of what its wrapped module's forward computed."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[..., dict[str, torch.Tensor]]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return self.loss_fn(idx, rng)


def _wrap(model: torch.nn.Module, loss_fn: Callable[..., dict[str, torch.Tensor]], g: distributed.Group,
          device: torch.device) -> torch.nn.Module:
    """The module whose call computes a batch's loss terms: DDP-wrapped when ``g`` has several ranks.
    The buffers (code tables, the trie, E_S) are constant: synchronised once, not before every step.
    ``static_graph``: every step uses the same parameters, though a switch may leave some unused
    (``stage2.ikd=False``: the IKD head)."""
    net = _Loss(model, loss_fn)
    if g.world == 1:
        return net
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True, **{sync: False})


def _rank_seed(seed: int, rank: int, epoch: int) -> int:
    """torch's seed on rank > 0 at the start of ``epoch`` (dropout masks: rank 0 continues the
    single-process stream; the others draw their own, reproducibly, so a resumed run repeats them)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, weights_only=False, map_location=device)
    except Exception as e:  # a truncated or foreign file: say which, do not guess
        raise RuntimeError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to "
                           "start this run from scratch") from None


def fit(model: torch.nn.Module, loss_fn: Callable[[np.ndarray, np.random.Generator], dict[str, torch.Tensor]],
        batches: Callable[[np.random.Generator], list[np.ndarray]], validate: Callable[[], dict[str, float]],
        select: str, sched: Schedule, seed: int, work_dir: Path | None = None, name: str = "train",
        progress: bool = True, after_epoch: Callable[[int], None] | None = None,
        params: list[torch.nn.Parameter] | None = None, every: int = 1, ddp: bool = False) -> FitResult:
    """Train ``model`` and leave it in the state of the epoch with the best ``validate()[select]``.

    ``batches(rng)`` gives one epoch's index arrays, ``loss_fn(idx, rng)`` the loss terms of a batch,
    ``validate()`` the validation metrics (recorded as ``valid_<name>``), run after every ``every``-th
    epoch and the last (early stopping counts validations), ``params`` what the optimiser
    (``sched.optimizer``) optimises: parameters
    or parameter groups (default: all of ``model``'s). Wall times are recorded as ``train_s`` /
    ``valid_s``: the only fields a resumed run does not repeat exactly. A non-finite loss stops the run
    with a :class:`TrainingDiverged` naming the learning rate.

    ``seed`` seeds the NumPy generator of batches and negatives; torch's generator (dropout) is not
    reseeded: it continues from the model's initialisation, which the caller seeds.

    ``ddp``: ``loss_fn`` computes its rank's share of each global batch ``idx`` (every rank gets the
    whole batch and the same ``rng`` draws; :func:`ungerlib.infra.distributed.part`): the terms, summed
    over the ranks, are the single-process terms. Under torchrun the model then trains with
    DistributedDataParallel (each rank's loss times the number of ranks, since DDP averages the
    gradients); ``validate`` runs on rank 0, which also writes the checkpoint, and its result is
    broadcast. Without torchrun, or with ``ddp=False``, this is the single-process loop.
    """
    device = next(model.parameters()).device
    g = distributed.current() if ddp else distributed.SINGLE
    rng = np.random.default_rng(seed)
    optimisers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if sched.optimizer not in optimisers:
        raise ValueError(f"{name}: optimizer must be one of {sorted(optimisers)}, got {sched.optimizer!r}")
    opt = optimisers[sched.optimizer](params or list(model.parameters()), lr=sched.lr, weight_decay=sched.weight_decay)
    per_epoch = len(batches(np.random.default_rng(seed)))  # same count every epoch
    total = sched.epochs * per_epoch
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, sched.warmup_steps, sched.lr_decay, total))
    st: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad": 0, "history": [], "best_state": None}
    ckpt = work_dir / f"{name}.pt" if work_dir else None
    if ckpt and ckpt.exists():
        st = _load_checkpoint(ckpt, device)
        model.load_state_dict(st.pop("model")), opt.load_state_dict(st.pop("opt"))
        lr_sched.load_state_dict(st.pop("sched"))
        rng.bit_generator.state = st.pop("rng")
        torch.set_rng_state(st.pop("torch_rng").cpu())
        if "cuda_rng" in st and device.type == "cuda":
            torch.cuda.set_rng_state(st.pop("cuda_rng").cpu(), device)
        st.pop("cuda_rng", None)
        runtime.log(f"[{name}] resuming from epoch {st['epoch']} of {sched.epochs} ({ckpt})")
    net = _wrap(model, loss_fn, g, device)
    started, first = time.time(), st["epoch"]
    for epoch in range(st["epoch"], sched.epochs):
        if st["bad"] >= sched.patience:
            runtime.log(f"[{name}] early stop: no better valid {select} for {sched.patience} epochs")
            break
        if g.rank > 0:
            torch.manual_seed(_rank_seed(seed, g.rank, epoch))
        net.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n_seen = 0
        for step, idx in enumerate(runtime.bar(batches(rng), f"{name} epoch {epoch + 1}/{sched.epochs}", per_epoch,
                                               progress and g.is_main())):
            with runtime.autocast(sched.precision, device):
                terms = net(idx, rng)
            loss = terms["loss"].detach() if g.world == 1 else distributed.all_sum(terms["loss"].detach())
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{name}: the training loss is {float(loss)} at epoch {epoch + 1}, "
                                       f"batch {step + 1}: training diverged; lower the learning rate "
                                       f"({name}.lr = {sched.lr:g})")
            opt.zero_grad(set_to_none=True)
            (terms["loss"] * g.world if g.world > 1 else terms["loss"]).backward()
            if sched.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), sched.clip_norm)
            opt.step()
            lr_sched.step()
            for k, v in terms.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            n_seen += len(idx)
        if g.world > 1:  # each rank summed its shares: their sum is the single-process sum
            sums = dict(zip(sums, distributed.all_sum(torch.tensor(list(sums.values()), dtype=torch.float64,
                                                                   device=device)).tolist()))
        rec: dict[str, float] = {"epoch": epoch + 1, **{f"loss_{k}": v / n_seen for k, v in sums.items()},
                                 "train_s": time.time() - t0}
        if (epoch + 1) % every == 0 or epoch + 1 == sched.epochs:
            t0 = time.time()
            model.eval()
            valid: dict[str, float] = {}
            if g.is_main():
                with torch.no_grad(), runtime.autocast(sched.precision, device):
                    valid = {f"valid_{k}": v for k, v in validate().items()}
                valid["valid_s"] = time.time() - t0
            rec.update(distributed.broadcast(valid) if g.world > 1 else valid)
            score = rec[f"valid_{select}"]
            if score > st["best"]:
                st.update(best=score, best_epoch=epoch + 1, bad=0,
                          best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
            else:
                st["bad"] += 1
        st["history"].append(rec)
        st["epoch"] = epoch + 1
        if ckpt and g.is_main():
            atomic_torch_save({**st, "model": model.state_dict(), "opt": opt.state_dict(),
                               "sched": lr_sched.state_dict(), "rng": rng.bit_generator.state,
                               "torch_rng": torch.get_rng_state(),
                               **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
                              ckpt)
        if g.world > 1:
            distributed.barrier()  # every rank leaves the epoch with its checkpoint on disk
        runtime.log(f"[{name}] epoch {epoch + 1}/{sched.epochs} "
                    + " ".join(f"{k}={v:.4f}" for k, v in rec.items() if k.startswith(("loss_", "valid_"))
                               and not k.endswith("_s"))
                    + f" ({rec['train_s'] + rec.get('valid_s', 0):.0f}s, best epoch {st['best_epoch']}, "
                    + f"{runtime.eta(epoch + 1 - first, sched.epochs - first, started)})")
        if after_epoch:
            after_epoch(epoch + 1)
    if st["best_state"] is not None:
        model.load_state_dict(st["best_state"])
    model.eval()
    return FitResult(st["history"], st["best_epoch"], sched.epochs)

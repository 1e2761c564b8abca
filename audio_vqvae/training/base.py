"""The solver base both trainers derive from (training.vqvae.Trainer, prior.training.PriorTrainer): the
optimisation step (AMP, loss scaling, clipping, the lr schedule), the validation and checkpoint cadence, SIGTERM
preemption, save/restore of every state an exact resume needs (model, optimizer, scheduler, scaler, every rank's RNG,
the trainer's state dataclass), seeding, and the start of a run (device, DDP, run directory, resume choice).

The contract: a trainer sets `cfg`, `tcfg` (TrainerConfig), `ckpt_dir`, `ddp`, `device`, `model`, `opt`
(Optimization) and `state` (a dataclass with at least `step`, `finished`, `nonfinite_total` and
`nonfinite_consecutive`), builds them with `setup`, and
implements `save` (one checkpoint file), `check_resumable` (refuse a checkpoint of another run) and
`run_validation` (rank 0: validate, log, keep best.pt).
"""
from __future__ import annotations

import logging
import math
import random
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler

from ..checkpoint import load_checkpoint
from ..device import resolve_device
from .distributed import Distributed
from .runs import keep_step_checkpoints, resume_checkpoint

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What every trainer's resume restores besides the model/optimizer/scheduler/scaler state dicts; a trainer's
    state derives from it and adds its own fields (its best validation value, a sampler position)."""

    step: int = 0
    nonfinite_total: int = 0
    nonfinite_consecutive: int = 0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainerConfig:
    """The `trainer` config node, one field per key (configs/trainer/default.yaml documents each)."""

    max_steps: int
    batch_size: int
    lr: float
    lr_schedule: str
    lr_min_ratio: float
    warmup_steps: int
    adam_betas: tuple[float, float]
    grad_clip: float
    precision: str
    compile: bool
    num_workers: int
    log_every: int
    val_every: int
    val_examples: int
    unit_curves: bool
    ckpt_every: int
    keep_last: int
    resume: Any
    max_nonfinite: int
    deterministic: bool
    wait_timeout_s: float

    @classmethod
    def from_config(cls, node: DictConfig) -> TrainerConfig:
        values = OmegaConf.to_container(node, resolve=True)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"trainer: unknown keys {unknown}")
        return cls(**{**values, "adam_betas": tuple(values["adam_betas"])})


# ---- small helpers ------------------------------------------------------------------------------------------


def lr_lambda(step: int, warmup: int, max_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then constant or cosine decay to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"trainer.lr_schedule: unknown schedule {schedule!r} (use constant or cosine)")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """trainer.precision -> autocast dtype (None = plain float32)."""
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ValueError(f"trainer.precision: unknown {precision!r} (use fp32, bf16 or fp16)")
    return table[precision]


def rng_state() -> dict[str, Any]:
    """All RNG states as weights_only-loadable containers."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SkipSampler(Sampler[int]):
    """Wraps the per-epoch sampler (and its dataset's epoch) and drops its first `skip` indices: resume lands on the
    same batch an uninterrupted run would draw next."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base = base
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.base.dataset.set_epoch(epoch)  # segment offsets are a function of (seed, epoch, index); shared with workers
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return len(self.base) - self.skip


class Preemption:
    """While entered, the first SIGTERM only sets `requested` (the loop saves and stops after the step in flight); a
    second SIGTERM gets the default action and ends the process at once. Inert outside the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __enter__(self) -> Preemption:  # noqa: PYI034 (typing.Self needs Python 3.11; we support 3.10)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class Optimization:
    """What one optimisation step and its resume need besides the model: optimizer, lr schedule, fp16 loss scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def step(self, loss: torch.Tensor, params: Iterator[torch.nn.Parameter], grad_clip: float) -> None:
        """backward (scaled), clip the global grad norm when grad_clip > 0, optimizer, scaler and schedule steps."""
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """From a checkpoint's resume state (the keys `state_dict` writes)."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])

    @classmethod
    def build(cls, optimizer: torch.optim.Optimizer, t: TrainerConfig, device: torch.device) -> Optimization:
        """`optimizer` with the trainer's warm-up + schedule (lr_lambda) and a GradScaler enabled for fp16."""
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_lambda(s, t.warmup_steps, t.max_steps, t.lr_schedule, t.lr_min_ratio))
        return cls(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=t.precision == "fp16"))


def save_last(save: Callable[[str, list[dict[str, Any]]], None], ddp: Distributed, ckpt_dir: Path, step: int,
              keep_last: int) -> None:
    """Gather every rank's RNG state, then rank 0 writes last.pt and step-XXXXXXXX.pt (pruned to keep_last) with
    `save(name, rng)`; collective (every rank calls it)."""
    rng = ddp.gather(rng_state())
    if ddp.is_main:
        save("last.pt", rng)
        if keep_last > 0:
            save(f"step-{step:08d}.pt", rng)
            keep_step_checkpoints(ckpt_dir, keep_last)


@dataclass(frozen=True)
class RunStart:
    """Where a run starts: its ranks, device, directory (rank 0's) and the checkpoint it resumes from (or None)."""

    ddp: Distributed
    device: torch.device
    run_dir: Path
    resume_from: Path | None


def start_run(cfg: DictConfig, threads: int = 0) -> RunStart:
    """The common start of both trainers: DDP from the environment, the device, torch threads (0: torch's default),
    the run directory (rank 0's: its ${now:} may differ by a second), the resume choice and deterministic mode."""
    ddp = Distributed.from_env()
    ddp.wait_timeout_s = float(cfg.trainer.wait_timeout_s)
    device = resolve_device(cfg.device, ddp.local_rank)
    ddp.init(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(ddp.from_main(lambda: str(cfg.run_dir)))
    resume_from = resume_checkpoint(cfg.trainer.resume, run_dir)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    return RunStart(ddp, device, run_dir, resume_from)


class Solver(ABC):
    """What the VQ-VAE and the prior trainers share: setup, checkpoints, restore, the cadence after each step and the
    SIGTERM stop. The module docstring states what a subclass provides."""

    cfg: DictConfig
    tcfg: TrainerConfig
    run_dir: Path
    ckpt_dir: Path
    ddp: Distributed
    device: torch.device
    model: torch.nn.Module
    opt: Optimization
    state: Any
    net: torch.nn.Module
    writer: Any

    # ---- what a trainer provides ---------------------------------------------------------------------------------

    @abstractmethod
    def save(self, name: str, rng: list[dict[str, Any]], metrics: dict[str, float] | None = None) -> None:
        """Rank 0 writes ckpt_dir/name with the model, the resume state and `rng` (every rank's RNG state)."""

    @abstractmethod
    def check_resumable(self, path: Path, ckpt: dict[str, Any]) -> None:
        """A ValueError naming `path` unless its checkpoint is a resumable one of this run."""

    @abstractmethod
    def run_validation(self, rng: list[dict[str, Any]]) -> None:
        """Rank 0: validate, log, and keep best.pt (rng: every rank's state, for that file)."""

    # ---- shared --------------------------------------------------------------------------------------------------

    def setup(self, model: torch.nn.Module,
              optimizer: Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer], state: Any,
              broadcast_buffers: bool = True, runs: torch.nn.Module | None = None) -> None:
        """The model (on the device), its optimisation (`optimizer(params)`, schedule, scaler), the initial state, the
        module that runs the steps (`runs`, default the model), compiled and DDP-wrapped as configured, and rank 0's
        TensorBoard writer (cfg, tcfg, ddp, device, run_dir set before)."""
        t = self.tcfg
        self.amp_dtype = autocast_dtype(t.precision)
        self.model = model
        self.opt = Optimization.build(optimizer(model.parameters()), t, self.device)
        self.state = state
        runs = self.model if runs is None else runs  # the part whose forward the steps call (the trained part)
        self.net = torch.compile(runs) if t.compile else runs
        if self.ddp.world_size > 1:
            self.net = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=broadcast_buffers)
        self.writer = None
        if self.ddp.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def restore(self, path: Path) -> None:
        """Load every state from a checkpoint written by `save` (after `check_resumable`)."""
        ckpt = load_checkpoint(path)
        self.check_resumable(path, ckpt)
        saved = ckpt["resume"]
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(saved)
        self.state = type(self.state)(**saved["state"])
        set_rng_state(saved["rng"][self.ddp.rank])
        log.info("resumed from %s at step %d", path, self.state.step)

    def save_last(self) -> None:
        """last.pt (and a step checkpoint, pruned to keep_last) at the current step; collective (every rank)."""
        save_last(self.save, self.ddp, self.ckpt_dir, self.state.step, self.tcfg.keep_last)

    def periodic(self, final: bool) -> None:
        """Validation and checkpoints due after this step (collective: every rank calls it)."""
        t, state = self.tcfg, self.state
        if state.step % t.val_every == 0 or final:
            rng = self.ddp.gather(rng_state())
            if self.ddp.is_main:
                self.run_validation(rng)
        if state.step % t.ckpt_every == 0 or final:
            state.finished = final
            self.save_last()

    def preempted(self, preemption: Preemption) -> bool:
        """True (after writing last.pt) when SIGTERM reached any rank: all ranks stop at the same step."""
        if not self.ddp.agree(preemption.requested, every=False):
            return False
        self.save_last()
        log.warning("SIGTERM: stopped at step %d; last.pt written, continue with trainer.resume=auto", self.state.step)
        return True

    def count_nonfinite(self, loss: float) -> None:
        """Book a step skipped for a non-finite loss (every rank together): count it (in a row and in all), log it,
        and stop the run with a RuntimeError after trainer.max_nonfinite in a row."""
        state, limit = self.state, self.tcfg.max_nonfinite
        state.nonfinite_total += 1
        state.nonfinite_consecutive += 1
        log.warning("step %d: non-finite loss (%s on this rank), step skipped (%d in a row, %d in all)", state.step,
                    loss, state.nonfinite_consecutive, state.nonfinite_total)
        if state.nonfinite_consecutive >= limit:
            raise RuntimeError(f"{state.nonfinite_consecutive} non-finite losses in a row at step {state.step} "
                               f"(trainer.max_nonfinite={limit}); lower trainer.lr or check the data")

    def record_validation(self, metrics: dict[str, float], rng: list[dict[str, Any]], key: str, best: str) -> None:
        """Rank 0 after a validation: the metrics into the history and TensorBoard (val/...), and best.pt when
        metrics[key] is below the state's `best` field (lower is better; never at step 0)."""
        state = self.state
        state.history.append({"step": state.step, **metrics})
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, state.step)
        if state.step > 0 and metrics[key] < getattr(state, best):
            setattr(state, best, metrics[key])
            self.save("best.pt", rng, metrics)

    def train_loop(self, desc: str, step: Callable[[], dict[str, float] | None]) -> None:
        """The loop of a trainer whose batches are a function of the step: a validation before the first step,
        then `step()` (its scalars, or None when skipped) to trainer.max_steps with a progress bar, the scalars and
        the learning rate in TensorBoard every log_every steps, and `after_step` after each (SIGTERM stops)."""
        from tqdm import tqdm

        t, state = self.tcfg, self.state
        if state.step >= t.max_steps:
            return
        if state.step == 0 and self.ddp.is_main:
            self.run_validation(rng=[])
        bar = tqdm(total=t.max_steps, initial=state.step, disable=not self.ddp.is_main, dynamic_ncols=True, desc=desc)
        with Preemption() as preemption:
            while state.step < t.max_steps:
                scalars = step()
                if scalars is not None:
                    bar.update(1)
                    if state.step % t.log_every == 0 and self.writer is not None:
                        for k, v in scalars.items():
                            self.writer.add_scalar(f"train/{k}", v, state.step)
                        self.writer.add_scalar("train/lr", self.opt.scheduler.get_last_lr()[0], state.step)
                        bar.set_postfix({k: f"{v:.3f}" for k, v in list(scalars.items())[:2]})
                if self.after_step(preemption, stepped=scalars is not None):
                    break
        bar.close()
        if self.writer is not None:
            self.writer.close()

    def after_step(self, preemption: Preemption, stepped: bool) -> bool:
        """What follows a training step, in this order: on SIGTERM (any rank) last.pt is written at once and True
        returned (stop; a due validation is left out, it would delay the save past the grace period before SIGKILL);
        else, when the step counted (`stepped`), the validation and checkpoints due (`periodic`). Collective."""
        final = self.state.step >= self.tcfg.max_steps
        if not final and self.preempted(preemption):
            return True
        if stepped:
            self.periodic(final=final)
        return False

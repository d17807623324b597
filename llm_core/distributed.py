"""Training on several processes (torch.distributed DDP) and resuming a run where it stopped.

- ``DistContext.from_env()``: under ``torchrun`` (``WORLD_SIZE`` > 1) joins the process group
  (NCCL on GPUs, gloo on CPUs) and knows its rank; alone, a context of one that does nothing.
- ``EpochBatches``: the training batches in a seeded order that depends only on (seed, epoch),
  each rank taking its contiguous share of every global batch, with a position that can be
  saved and restored. Iterating a ``DataLoader`` draws from the global random generator; these
  batches do not, so evaluations and restarts cannot shift the order or the dropout stream.
- ``save_resume_state`` / ``load_resume_state``: model, AdamW state, step, data position and
  every rank's random generators in ``DIR/resume/`` (safetensors for tensors, JSON for the rest; no
  pickles), written to a temporary folder and renamed, so a run killed mid-save keeps the last
  complete state.

Same global batch on N processes = same gradients as one process: each rank's loss is the mean
over its equal share, and DDP averages the gradients over ranks.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import atomic_dir

RESUME_DIR = "resume"


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device | None = None) -> "DistContext":
        """Join the process group ``torchrun`` describes in the environment (alone: no-op)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        backend = "nccl" if use_cuda else "gloo"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:  # before joining: NCCL binds each rank's communicator to the current GPU
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend)

    def device(self, requested: torch.device) -> torch.device:
        """This rank's device: its own GPU under NCCL, else the requested one."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return requested

    def mean(self, value: float) -> float:
        """The mean of ``value`` over ranks (itself when alone)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64,
                         device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (so all stop at the same step)."""
        if not self.enabled:
            return flag
        return self.mean(1.0 if flag else 0.0) > 0.0

    def rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's random generator states (dropout), keyed ``rank{r}.cpu`` and
        ``rank{r}.cuda`` (its own GPU, under NCCL) or ``rank0.cuda{i}`` (alone: every GPU).
        Under DDP a collective: every rank calls it at the same step and gets them all."""
        own = {"cpu": torch.get_rng_state()}
        if not self.enabled:
            if torch.cuda.is_available():
                own.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            return {f"rank0.{k}": v for k, v in own.items()}
        import torch.distributed as dist

        on = torch.device("cpu")
        if self.backend == "nccl":
            on = torch.device("cuda", self.local_rank)
            own["cuda"] = torch.cuda.get_rng_state(on)
        out = {}
        for name, state in own.items():  # the same names on every rank, in the same order
            mine = state.to(on)
            parts = [torch.empty_like(mine) for _ in range(self.world_size)]
            dist.all_gather(parts, mine)
            out.update({f"rank{r}.{name}": part.cpu() for r, part in enumerate(parts)})
        return out

    def share(self, batch: tuple[torch.Tensor, ...], loss_terms) -> tuple[tuple[torch.Tensor, ...], float]:
        """This rank's rows of a global batch every rank holds, and the factor that turns the mean
        loss over those rows into this rank's part of the global batch's mean loss.

        ``loss_terms(batch)`` counts the terms a batch's mean loss averages (examples, or target
        tokens not ignored), so shares of unequal size still give the one-process gradient once DDP
        averages over ranks: factor = world size × this share's terms / the batch's terms. A rank
        left without rows (a last batch smaller than the world) takes the first row with factor 0:
        it still joins every all-reduce."""
        if not self.enabled:
            return batch, 1.0
        rows = tuple(t.tensor_split(self.world_size)[self.rank] for t in batch)
        if rows[0].shape[0] == 0:
            return tuple(t[:1] for t in batch), 0.0
        return rows, self.world_size * loss_terms(rows) / loss_terms(batch)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class EpochBatches:
    """Training batches of a windows dataset, order fixed by (seed, epoch), this rank's share.

    ``len()`` is the number of global batches per epoch (incomplete ones are dropped). Each
    ``iter()`` continues from the saved position to the end of the current epoch, then moves
    on to the next epoch (what ``for batch in loader`` does once per epoch). ``pin_memory``
    (batches bound for a CUDA GPU) makes each batch in page-locked memory, as a DataLoader would.
    """

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False):
        if batch_size % world_size:
            raise ValueError(f"the batch size {batch_size} must be divisible by the number of processes "
                             f"{world_size} (each takes an equal share of every batch)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.pin_memory = bool(pin_memory)
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=gen)

    def __iter__(self):
        order = self.order(self.epoch)
        share = self.batch_size // self.world_size
        while self.position < len(self):
            start = self.position * self.batch_size + self.rank * share
            rows = [self.dataset[int(i)] for i in order[start:start + share]]
            self.position += 1
            inputs, targets = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
            yield (inputs.pin_memory(), targets.pin_memory()) if self.pin_memory else (inputs, targets)
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if int(state["batch_size"]) != self.batch_size or int(state["seed"]) != self.seed:
            raise ValueError(f"the run being resumed used batch size {state['batch_size']} and seed "
                             f"{state['seed']}; pass the same --batch-size and --seed")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


# ---------------------------------------------------------------- resume state

def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """AdamW's state as flat tensors + JSON (param_groups, and which keys each param has)."""
    sd = optimizer.state_dict()
    tensors, keys = {}, {}
    for idx, state in sd["state"].items():
        keys[str(idx)] = {}
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().to("cpu").contiguous()
                keys[str(idx)][name] = "tensor"
            else:
                keys[str(idx)][name] = value
    return tensors, {"param_groups": sd["param_groups"], "state_keys": keys}


def save_resume_state(out_dir: str | os.PathLike, model, optimizer, info: dict, batches: EpochBatches,
                      rng_states: dict[str, torch.Tensor] | None = None) -> Path:
    """Write everything needed to continue the run to ``out_dir/resume`` (atomically).

    ``rng_states``: every rank's generators (``DistContext.rng_states()``, gathered on all
    ranks, written by rank 0); by default this process's, as the only rank."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / RESUME_DIR) as tmp:
        model_sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        # Tied weights share storage: safetensors refuses shared tensors, so store a clone.
        seen = {}
        for k, v in model_sd.items():
            ptr = v.data_ptr()
            if ptr in seen:
                model_sd[k] = v.clone()
            seen[ptr] = k
        save_file(model_sd, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        rng = DistContext().rng_states() if rng_states is None else rng_states
        save_file({**opt_tensors, **{f"rng.{k}": v for k, v in rng.items()}}, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**info, "optimizer": opt_meta, "data": batches.state_dict()},
                                                   indent=1))
    return out / RESUME_DIR


def load_resume_state(run_dir: str | os.PathLike, model, optimizer, batches: EpochBatches,
                      rank: int = 0, local_device: torch.device | None = None) -> dict:
    """Restore what ``save_resume_state`` wrote; returns its info (step, tokens seen, ...).

    Every rank calls it and takes back its own random generators (``rank``; under NCCL its
    GPU's is ``local_device``'s). A rank the saved run did not have (more processes now)
    keeps the generators it was seeded with; ``info["rng_restored"]`` says which happened."""
    from safetensors.torch import load_file

    src = Path(run_dir) / RESUME_DIR
    if not (src / "state.json").is_file():
        raise FileNotFoundError(f"{src} has no resume state (state.json): was the run started with --out {run_dir}?")
    state = json.loads((src / "state.json").read_text())
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_file(str(src / "model.safetensors")).items()})
    flat = load_file(str(src / "optimizer.safetensors"))
    meta = state.pop("optimizer")
    opt_state = {}
    for idx, keys in meta["state_keys"].items():
        opt_state[int(idx)] = {name: (flat[f"optimizer.{idx}.{name}"] if kind == "tensor" else kind)
                               for name, kind in keys.items()}
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})  # moves to device
    # A state written before every rank's generators were kept has one set, used by all
    # (those runs seeded every rank alike).
    mine = "rng." if "rng.cpu" in flat else f"rng.rank{rank}."
    restored = mine + "cpu" in flat
    if restored:
        torch.set_rng_state(flat[mine + "cpu"])
    if restored and torch.cuda.is_available():
        if mine + "cuda" in flat:  # one rank's own GPU (NCCL)
            torch.cuda.set_rng_state(flat[mine + "cuda"], local_device or torch.device("cuda"))
        else:  # one process, every GPU
            cuda_states = [flat[k] for k in sorted((k for k in flat if k.startswith(mine + "cuda")),
                                                   key=lambda k: int(k.removeprefix(mine + "cuda")))]
            if cuda_states and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
    batches.load_state_dict(state.pop("data"))
    state["rng_restored"] = restored
    return state

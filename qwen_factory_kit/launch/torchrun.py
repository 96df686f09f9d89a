"""The command that runs a recipe: one process, or torchrun with the kit's entry module on every rank.

Reads the same environment variables as ``llamafactory-cli train`` (NNODES, NODE_RANK,
NPROC_PER_NODE, MASTER_ADDR, MASTER_PORT, FORCE_TORCHRUN; RDZV_ID, MIN_NNODES, MAX_NNODES and
MAX_RESTARTS for elastic jobs), but passes arguments as a list: paths with spaces survive, where
LLaMA-Factory's own relaunch splits them. On a GPU the training process gets PyTorch's expandable
segments (``presets.ALLOCATOR``), one process or many, unless PYTORCH_CUDA_ALLOC_CONF is set already
(or OPTIM_TORCH=0, llamafactory-cli's switch for it under torchrun).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from ..errors import QfkError

ENTRY_MODULE = "qwen_factory_kit.launch"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # variables added to the caller's environment
    distributed: bool = False
    nproc: int = 1
    nnodes: int = 1

    def describe(self) -> str:
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)

    def redacted(self) -> "Launch":
        """This launch as it may be shown: the values of secret ``key=value`` arguments and of
        secret-named variables replaced (``hf_hub_token=...``, ``WANDB_API_KEY``)."""
        from ..redact import REDACTED, SECRET_ENV, redact_assignments

        env = {k: REDACTED if SECRET_ENV.search(k) else v for k, v in self.env.items()}
        return Launch(redact_assignments(self.argv), env, self.distributed, self.nproc, self.nnodes)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_number(port: str | int, example: int) -> int | None:
    """A ``--port`` value: None for ``auto`` (the caller picks a free one), else the port number;
    anything else is the user's mistake, with ``example`` in the fix."""
    if str(port).lower() == "auto":
        return None
    try:
        value = int(port)
    except ValueError:
        raise QfkError(f"--port {port} is neither a number nor auto", f"for example: --port {example}, or --port auto") from None
    if not 1 <= value <= 65535:
        raise QfkError(f"--port {value} is outside 1-65535", "or let qfk pick one: --port auto")
    return value


def device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover
        return 0


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "y")


def allocator_env(env: dict, gpus: int) -> dict[str, str]:
    """PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True for a training process on a GPU, unless the user
    set the variable (theirs is inherited) or OPTIM_TORCH=0; {} otherwise."""
    from ..recipe.presets import ALLOCATOR

    if not gpus or ALLOCATOR.variable in env or not _truthy(env.get("OPTIM_TORCH", "1")):
        return {}
    return {ALLOCATOR.variable: ALLOCATOR.value}


def compose(recipe: str, overrides: list[str] | tuple[str, ...] = (), *, nproc: int | None = None,
            args: dict | None = None, environ: dict | None = None, devices: int | None = None) -> Launch:
    """How to launch ``recipe``: torchrun when more than one process or node is asked for, when
    more than one GPU is visible (as llamafactory-cli does), when FORCE_TORCHRUN is set, or when the
    recipe uses DeepSpeed (which needs a distributed launch even on one GPU)."""
    env = dict(os.environ if environ is None else environ)
    args = args or {}
    nnodes = int(env.get("NNODES", "1"))
    gpus = device_count() if devices is None else devices
    per_node = nproc or int(env.get("NPROC_PER_NODE") or 0) or max(gpus, 1)
    wants = nnodes > 1 or per_node > 1 or _truthy(env.get("FORCE_TORCHRUN")) or bool(args.get("deepspeed"))
    entry = ["-m", ENTRY_MODULE, recipe, *overrides]
    added = allocator_env(env, gpus)
    if not wants:
        return Launch([sys.executable, *entry], added)
    if _truthy(env.get("OPTIM_TORCH", "1")) and gpus:
        added["TORCH_NCCL_AVOID_RECORD_STREAMS"] = "1"
    master_addr = env.get("MASTER_ADDR", "127.0.0.1")
    master_port = env.get("MASTER_PORT") or str(free_port())
    run = [sys.executable, "-m", "torch.distributed.run"]
    if env.get("RDZV_ID"):
        nodes = f"{env['MIN_NNODES']}:{env['MAX_NNODES']}" if env.get("MIN_NNODES") and env.get("MAX_NNODES") else str(nnodes)
        run += ["--nnodes", nodes, "--nproc-per-node", str(per_node), "--rdzv-id", env["RDZV_ID"], "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"{master_addr}:{master_port}", "--max-restarts", env.get("MAX_RESTARTS", "0")]
    else:
        run += ["--nnodes", str(nnodes), "--node_rank", env.get("NODE_RANK", "0"), "--nproc_per_node", str(per_node),
                "--master_addr", master_addr, "--master_port", master_port]
    return Launch([*run, *entry], added, True, per_node, nnodes)

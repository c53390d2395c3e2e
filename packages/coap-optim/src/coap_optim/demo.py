"""A self-contained demo: a tiny byte-level language model trained with AdamW, COAP and 8-bit COAP.

COAP (Xiao et al., *COAP: Memory-Efficient Training with Correlation-Aware Gradient Projection*, CVPR 2025,
arXiv 2412.00071; official code https://github.com/bytedance/coap at commit ``deabc3a``) keeps Adam's moments in a
low-rank space. This demo shows the trade on a problem small enough for a laptop CPU: the same causal byte-level
transformer, the same initial weights and the same batches, trained once per optimizer on the text of
``pydoc_data.topics`` (the help topics that ship with CPython, about 466k bytes, so nothing is downloaded).

It records, per optimizer, the final validation loss, the optimizer-state bytes per model parameter (every state tensor,
projection matrices included) and the median time of ``optimizer.step()``, and writes ``summary.json`` and, when
matplotlib is importable, ``loss_curves.png`` to the output folder.

The model is written with ``torch.nn`` only, so the demo needs nothing beyond torch (tqdm and matplotlib are used when
installed). The attention and MLP Linears live in modules named ``attn`` and ``mlp``, which is what the LLaMA example of
the official code projects (``grouped_params_with_proj``).

Example::

    from coap_optim.demo import DemoConfig, run_demo

    result = run_demo("outputs/demo", DemoConfig(steps=100))
    for row in result.runs:
        print(row.name, row.final_eval_loss, row.state_bytes_per_param)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OPTIMIZER_NAMES",
    "ByteLM",
    "DemoConfig",
    "DemoResult",
    "OptimizerRun",
    "build_optimizer",
    "load_corpus",
    "run_demo",
    "sample_batch",
]

logger = logging.getLogger(__name__)

OptimizerName = Literal["adamw", "coap", "coap8bit"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = ("adamw", "coap", "coap8bit")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run (every optimizer gets the same model, data, seed and learning rate).

    Args:
        steps: training steps per optimizer.
        batch_size: sequences per step.
        seq_len: bytes per sequence fed to the model (the target is the same window shifted by one byte).
        hidden_size: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (``hidden_size`` must be divisible by it).
        ffn_size: width of the MLP's hidden layer.
        lr: learning rate of every optimizer.
        weight_decay: decoupled weight decay of every optimizer.
        rank: COAP projection rank for the ``attn``/``mlp`` Linears.
        update_interval: COAP ``update_interval`` (T_u): steps between projection refreshes.
        reproject_factor: COAP ``reproject_factor``: every ``T_u * reproject_factor`` steps P is recomputed.
        scale: COAP ``scale`` applied to the back-projected update.
        eval_every: steps between two validation evaluations (the last step is always evaluated).
        eval_batches: batches of ``batch_size`` sequences in the fixed validation set.
        val_fraction: trailing fraction of the corpus held out for validation.
        seed: seed of the model initialisation and of the batch sampler (identical for every optimizer).
        num_threads: torch intra-op threads while the demo runs (``None`` leaves the setting alone).
        progress: show a tqdm progress bar when tqdm is installed.
    """

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 344
    lr: float = 1e-3
    weight_decay: float = 0.0
    rank: int = 32
    update_interval: int = 20
    reproject_factor: int = 5
    scale: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    val_fraction: float = 0.1
    seed: int = 0
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "seq_len", "hidden_size", "num_layers", "num_heads", "ffn_size", "rank")
        for name in (*positive, "update_interval", "reproject_factor", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0.0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")


@dataclass
class OptimizerRun:
    """What one optimizer's training run produced.

    Args:
        name: the optimizer's name (one of ``OPTIMIZER_NAMES``).
        train_losses: training loss of every step, in order.
        eval_steps: steps after which the validation loss was measured.
        eval_losses: validation loss at each of ``eval_steps``.
        state_bytes: bytes of every tensor in the optimizer state after training (projection matrices included).
        num_params: trainable parameters of the model.
        step_ms: wall time of each ``optimizer.step()`` call in milliseconds.
        iteration_ms: wall time of each whole iteration (forward, backward, step) in milliseconds.
    """

    name: str
    train_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    state_bytes: int = 0
    num_params: int = 0
    step_ms: list[float] = field(default_factory=list)
    iteration_ms: list[float] = field(default_factory=list)

    @property
    def final_eval_loss(self) -> float:
        """Validation loss after the last step."""
        return self.eval_losses[-1]

    @property
    def state_bytes_per_param(self) -> float:
        """Optimizer-state bytes divided by the model's parameter count."""
        return self.state_bytes / self.num_params

    @property
    def median_step_ms(self) -> float:
        """Median wall time of ``optimizer.step()``."""
        return statistics.median(self.step_ms)

    @property
    def median_iteration_ms(self) -> float:
        """Median wall time of a whole training iteration."""
        return statistics.median(self.iteration_ms)

    def summary(self) -> dict[str, float | int]:
        """The figures written to ``summary.json`` for this optimizer."""
        return {
            "final_eval_loss": self.final_eval_loss,
            "state_bytes": self.state_bytes,
            "state_bytes_per_param": self.state_bytes_per_param,
            "median_step_ms": self.median_step_ms,
            "median_iteration_ms": self.median_iteration_ms,
            "num_params": self.num_params,
        }


@dataclass
class DemoResult:
    """The outcome of :func:`run_demo`.

    Args:
        config: the settings used.
        runs: one entry per optimizer, in the order they ran.
        summary_path: the ``summary.json`` written.
        plot_path: the ``loss_curves.png`` written, or ``None`` when matplotlib is not importable.
    """

    config: DemoConfig
    runs: list[OptimizerRun]
    summary_path: Path
    plot_path: Path | None


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection.

    Args:
        hidden_size: model width C.
        num_heads: attention heads H (C must be divisible by H).
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, T, C). Returns: (B, T, C)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C / H)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    """Two-layer GELU MLP.

    Args:
        hidden_size: model width C.
        ffn_size: hidden width F.
    """

    def __init__(self, hidden_size: int, ffn_size: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, ffn_size, bias=False)
        self.down = nn.Linear(ffn_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, T, C). Returns: (B, T, C)."""
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_size)
        self.attn = CausalSelfAttention(hidden_size, num_heads)
        self.ln_2 = nn.LayerNorm(hidden_size)
        self.mlp = MLP(hidden_size, ffn_size)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, T, C). Returns: (B, T, C)."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ByteLM(nn.Module):
    """A small causal transformer over bytes (vocabulary 256), written with ``torch.nn`` only.

    Args:
        hidden_size: model width C.
        num_layers: transformer blocks.
        num_heads: attention heads.
        ffn_size: MLP hidden width.
        max_len: longest sequence the learned position embedding covers.
        vocab_size: token vocabulary (256 for raw bytes).
    """

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_size: int = 344,
        max_len: int = 256,
        vocab_size: int = 256,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, hidden_size)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, ffn_size) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-byte logits.

        Args:
            tokens: (B, T) int64 byte values, T <= ``max_len``.

        Returns:
            (B, T, vocab_size) logits; position t predicts byte t + 1.
        """
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.max_len}")
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, window: Tensor) -> Tensor:
        """Mean next-byte cross-entropy (nats) of a batch of windows.

        Args:
            window: (B, T + 1) int64; the model reads ``window[:, :-1]`` and predicts ``window[:, 1:]``.

        Returns:
            0-d loss.
        """
        logits = self(window[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


def load_corpus() -> Tensor:
    """The help-topic text of ``pydoc_data.topics`` (ships with CPython) as bytes.

    Returns:
        (N,) uint8 tensor of UTF-8 bytes, topics joined in sorted key order (N is about 466k).
    """
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)


def sample_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> Tensor:
    """Random windows of ``seq_len + 1`` consecutive bytes.

    Args:
        data: (N,) uint8 corpus.
        batch_size: windows B.
        seq_len: model input length T.
        generator: CPU generator choosing the window starts (the same seed gives the same batches).

    Returns:
        (B, T + 1) int64 windows.
    """
    if data.numel() <= seq_len + 1:
        raise ValueError(f"corpus of {data.numel()} bytes is too short for windows of {seq_len + 1}")
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(seq_len + 1)
    return data[offsets].long()


def build_optimizer(name: OptimizerName, model: nn.Module, config: DemoConfig) -> torch.optim.Optimizer:
    """The optimizer ``name`` for ``model`` with the demo's shared hyperparameters.

    Args:
        name: ``"adamw"`` (``torch.optim.AdamW``), ``"coap"`` (:class:`~coap_optim.CoapAdamW`) or ``"coap8bit"``
            (:class:`~coap_optim.CoapAdamW8bit`); the COAP variants project the ``attn``/``mlp`` Linears.
        model: the model whose parameters are optimised.
        config: learning rate, weight decay and COAP settings.

    Returns:
        A fresh optimizer.
    """
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, eps=1e-6, weight_decay=config.weight_decay)
    if name not in ("coap", "coap8bit"):
        raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZER_NAMES}")
    from coap_optim import CoapAdamW, CoapAdamW8bit, param_groups

    groups = param_groups(model, rank=config.rank, target_modules=["attn", "mlp"], weight_decay=config.weight_decay)
    optimizer_class = CoapAdamW if name == "coap" else CoapAdamW8bit
    return optimizer_class(
        groups,
        lr=config.lr,
        eps=1e-6,
        weight_decay=config.weight_decay,
        update_interval=config.update_interval,
        reproject_factor=config.reproject_factor,
        scale=config.scale,
    )


@torch.no_grad()
def _evaluate(model: ByteLM, batches: Sequence[Tensor]) -> float:
    model.eval()
    loss = sum(model.loss(batch).item() for batch in batches) / len(batches)
    model.train()
    return loss


def _train_one(name: OptimizerName, config: DemoConfig, train: Tensor, val_batches: Sequence[Tensor]) -> OptimizerRun:
    from coap_optim import state_nbytes

    torch.manual_seed(config.seed)
    model = ByteLM(config.hidden_size, config.num_layers, config.num_heads, config.ffn_size, max_len=config.seq_len)
    optimizer = build_optimizer(name, model, config)
    generator = torch.Generator().manual_seed(config.seed)
    run = OptimizerRun(name=name, num_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    steps: Iterable[int] = range(1, config.steps + 1)
    bar = None
    if config.progress and importlib.util.find_spec("tqdm") is not None:
        from tqdm.auto import tqdm

        bar = tqdm(steps, desc=name, leave=False)
        steps = bar
    for step in steps:
        batch = sample_batch(train, config.batch_size, config.seq_len, generator)
        start = time.perf_counter()
        loss = model.loss(batch)
        loss.backward()
        step_start = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"{name}: training loss became {value} at step {step}")
        run.train_losses.append(value)
        run.step_ms.append(1e3 * (end - step_start))
        run.iteration_ms.append(1e3 * (end - start))
        if step % config.eval_every == 0 or step == config.steps:
            run.eval_steps.append(step)
            run.eval_losses.append(_evaluate(model, val_batches))
            logger.info("%s step %d: train loss %.4f, eval loss %.4f", name, step, value, run.eval_losses[-1])
            if bar is not None:
                bar.set_postfix(eval_loss=f"{run.eval_losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    run.state_bytes = state_nbytes(optimizer)
    return run


def _plot(runs: Sequence[OptimizerRun], path: Path) -> Path | None:
    if importlib.util.find_spec("matplotlib") is None:
        logger.info("matplotlib is not installed: skipping %s (the curves are in summary.json)", path.name)
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for run in runs:
        window = max(1, len(run.train_losses) // 30)
        kernel = torch.ones(window) / window
        smooth = F.conv1d(torch.tensor(run.train_losses)[None, None], kernel[None, None]).flatten().tolist()
        (line,) = axes.plot(range(window, window + len(smooth)), smooth, alpha=0.5, label=f"{run.name} train")
        axes.plot(run.eval_steps, run.eval_losses, "o-", color=line.get_color(), label=f"{run.name} eval")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats / byte)")
    axes.set_title("byte-level LM on pydoc_data.topics")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _headline(runs: Sequence[OptimizerRun]) -> dict[str, float]:
    """A few figures for the monorepo demo's summary table: each optimizer's eval loss and state bytes per parameter."""
    headline: dict[str, float] = {}
    for run in runs:
        figures = run.summary()
        headline[f"{run.name}_eval_loss"] = figures["final_eval_loss"]
        headline[f"{run.name}_state_B_per_param"] = figures["state_bytes_per_param"]
    return headline


def run_demo(
    out_dir: str | Path,
    config: DemoConfig | None = None,
    optimizers: Sequence[OptimizerName] = OPTIMIZER_NAMES,
) -> DemoResult:
    """Train the same tiny byte-level LM once per optimizer and write ``summary.json`` and ``loss_curves.png``.

    Args:
        out_dir: output folder (created if missing).
        config: settings; ``DemoConfig()`` when ``None``.
        optimizers: which optimizers to run, in order (names from ``OPTIMIZER_NAMES``).

    Returns:
        A :class:`DemoResult` with every run's curves and figures and the paths written.
    """
    config = config or DemoConfig()
    unknown = [name for name in optimizers if name not in OPTIMIZER_NAMES]
    if unknown or not optimizers:
        raise ValueError(f"optimizers must be a non-empty subset of {OPTIMIZER_NAMES}, got {list(optimizers)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()
    split = int(corpus.numel() * (1.0 - config.val_fraction))
    train, val = corpus[:split], corpus[split:]
    val_generator = torch.Generator().manual_seed(config.seed + 1)
    val_batches = [
        sample_batch(val, config.batch_size, config.seq_len, val_generator) for _ in range(config.eval_batches)
    ]
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        runs = [_train_one(name, config, train, val_batches) for name in optimizers]
    finally:
        torch.set_num_threads(previous_threads)
    summary = {
        "headline": _headline(runs),
        "config": dataclasses.asdict(config),
        "corpus_bytes": {"train": train.numel(), "val": val.numel()},
        "optimizers": {run.name: run.summary() for run in runs},
        "curves": {
            run.name: {"train_loss": run.train_losses, "eval_steps": run.eval_steps, "eval_loss": run.eval_losses}
            for run in runs
        },
    }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    plot_path = _plot(runs, out / "loss_curves.png")
    logger.info("wrote %s%s", summary_path, f" and {plot_path}" if plot_path else "")
    return DemoResult(config=config, runs=runs, summary_path=summary_path, plot_path=plot_path)

"""The ``coap-optim`` command line: ``demo``, ``smoke`` and ``convert``.

::

    coap-optim demo --out outputs/coap-optim/demo --steps 200     # AdamW vs COAP vs 8-bit COAP on a tiny byte LM
    coap-optim smoke                                              # the installed-package self-check
    coap-optim convert official.pt ours.pt --trust-pickle         # an official coap_torch state -> tensors only

The script stays thin: the work lives in :mod:`coap_optim.demo`, :mod:`coap_optim.smoke` and
:mod:`coap_optim.convert_official_state`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "convert_official_file", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``coap-optim`` (exposed for documentation and tests)."""
    from coap_optim.demo import OPTIMIZER_NAMES, DemoConfig

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="coap-optim", description="COAP low-rank optimizer (arXiv 2412.00071).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,smoke,convert}")

    demo = commands.add_parser("demo", help="train a tiny byte-level LM with AdamW, COAP and 8-bit COAP")
    demo.add_argument("--out", type=Path, default=Path("outputs/coap-optim/demo"), help="output folder")
    demo.add_argument("--steps", type=int, default=defaults.steps, help="training steps per optimizer")
    demo.add_argument(
        "--optimizers", nargs="+", choices=OPTIMIZER_NAMES, default=list(OPTIMIZER_NAMES), help="optimizers to run"
    )
    demo.add_argument("--lr", type=float, default=defaults.lr, help="learning rate of every optimizer")
    demo.add_argument("--rank", type=int, default=defaults.rank, help="COAP rank of the attn/mlp Linears")
    demo.add_argument("--batch-size", type=int, default=defaults.batch_size)
    demo.add_argument("--seq-len", type=int, default=defaults.seq_len)
    demo.add_argument("--eval-every", type=int, default=defaults.eval_every)
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--threads", type=int, default=None, help="torch threads (default: leave torch's setting)")
    demo.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")

    commands.add_parser("smoke", help="run the self-check (exit status 0 on success)")

    convert = commands.add_parser(
        "convert", help="convert an official bytedance/coap optimizer state file to a tensors-only file"
    )
    convert.add_argument("source", type=Path, help="official state (a torch.save file holding Python objects)")
    convert.add_argument("target", type=Path, help="where to write the converted, tensors-only state dict")
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required: the official format stores Python objects, so loading it runs pickle code; "
        "pass this only for files you trust",
    )
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from coap_optim.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            steps=args.steps,
            lr=args.lr,
            rank=args.rank,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            eval_every=min(args.eval_every, args.steps),
            seed=args.seed,
            num_threads=args.threads,
            progress=not args.no_progress,
        )
    except ValueError as error:
        print(f"coap-optim demo: {error}", file=sys.stderr)
        return 2
    result = run_demo(args.out, config, args.optimizers)
    header = f"{'optimizer':<10} {'eval loss':>10} {'state B/param':>14} {'median step ms':>15}"
    print(header)
    print("-" * len(header))
    for run in result.runs:
        print(
            f"{run.name:<10} {run.final_eval_loss:>10.4f} {run.state_bytes_per_param:>14.3f} "
            f"{run.median_step_ms:>15.2f}"
        )
    print(f"summary: {result.summary_path}")
    print(f"loss curves: {result.plot_path}" if result.plot_path else "loss curves: not drawn (matplotlib missing)")
    return 0


_OFFICIAL_STATE_KEYS = frozenset({"step", "projector", "exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"})
_RECOMPUTED_KEYS = frozenset({"RMS"})  # Adafactor recomputes the parameter RMS at every step
_PLAIN_TYPES = (bool, int, float, str, type(None))


def _plain_value(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return True
    return isinstance(value, list | tuple) and all(isinstance(v, _PLAIN_TYPES) for v in value)


def convert_official_file(source: str | Path, target: str | Path) -> dict[str, Any]:
    """Convert an official ``coap_torch`` optimizer state file into a tensors-only file (no model needed).

    The official file is unpickled with :func:`coap_optim.convert_official_state.load_official_state` (callers must
    have established that it is trusted). Each parameter's state becomes fp32 tensors via
    :func:`~coap_optim.convert_official_state.convert_official_param_state` (``projector.ortho_matrix`` -> ``P``,
    Tucker factors -> ``P0``/``P1``, 8-bit moments dequantised); ``param_groups`` keep their plain scalar entries.
    The result loads with ``torch.load(weights_only=True)``; to resume training, load it into an optimizer built over
    the same parameters with :func:`coap_optim.convert_official_state`.

    Args:
        source: the official state dict file (``torch.save(optimizer.state_dict())`` of ``coap_torch``).
        target: where to write ``{"state": {index: {name: tensor}}, "param_groups": [...]}``.

    Returns:
        A report: ``parameters`` (converted), ``projected`` (with ``P``), ``tucker`` (with ``P0``), ``dropped_keys``
        (``{param index: [keys not converted]}``) and ``dropped_group_keys`` (non-scalar group entries left out).
    """
    import torch

    from coap_optim.convert_official_state import convert_official_param_state, load_official_state

    official = load_official_state(source, trust_pickle=True)
    if not isinstance(official, Mapping) or not {"state", "param_groups"} <= set(official):
        raise ValueError(f"{source} does not hold an optimizer state dict (expected keys 'state' and 'param_groups')")
    state: dict[int, dict[str, Any]] = {}
    dropped: dict[int, list[str]] = {}
    for index, param_state in official["state"].items():
        state[int(index)] = convert_official_param_state(param_state)
        unknown = sorted(set(param_state) - _OFFICIAL_STATE_KEYS - _RECOMPUTED_KEYS)
        if unknown:
            dropped[int(index)] = unknown
    groups, dropped_group_keys = [], set()
    for group in official["param_groups"]:
        groups.append({key: value for key, value in group.items() if _plain_value(value)})
        dropped_group_keys |= {key for key, value in group.items() if not _plain_value(value)}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "param_groups": groups}, target)
    torch.load(target, weights_only=True)  # the point of converting: fail here, not at the user's resume
    return {
        "parameters": len(state),
        "projected": sum("P" in s for s in state.values()),
        "tucker": sum("P0" in s for s in state.values()),
        "dropped_keys": dropped,
        "dropped_group_keys": sorted(dropped_group_keys),
    }


def _run_convert(args: argparse.Namespace) -> int:
    if not args.trust_pickle:
        print(
            "coap-optim convert: refusing to unpickle the official state without --trust-pickle "
            "(the official format stores Python objects; loading an untrusted file can run arbitrary code)",
            file=sys.stderr,
        )
        return 2
    if not args.source.is_file():
        print(f"coap-optim convert: no such file: {args.source}", file=sys.stderr)
        return 2
    try:
        report = convert_official_file(args.source, args.target)
    except ValueError as error:
        print(f"coap-optim convert: {error}", file=sys.stderr)
        return 1
    print(f"{'parameters converted':<24} {report['parameters']}")
    print(f"{'with a matrix P':<24} {report['projected']}")
    print(f"{'with Tucker factors':<24} {report['tucker']}")
    for index, keys in report["dropped_keys"].items():
        print(f"unmatched state keys of parameter {index}: {', '.join(keys)}")
    if report["dropped_group_keys"]:
        print(f"non-scalar param-group keys left out: {', '.join(report['dropped_group_keys'])}")
    print(f"converted state written to {args.target} (loads with torch.load(weights_only=True))")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``coap-optim``.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit status (0 on success).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "demo":
        return _run_demo(args)
    if args.command == "smoke":
        from coap_optim.smoke import main as smoke_main

        return smoke_main()
    return _run_convert(args)


if __name__ == "__main__":
    sys.exit(main())

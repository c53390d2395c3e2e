"""Contract tests written once for every package's diffusers pipeline (the idea of diffusers'
``tests/pipelines/test_pipelines_common.py``, written for our pipelines).

A package's pipeline test class inherits :class:`PipelineTesterMixin` and provides:

- ``pipeline_class``: the pipeline type (``save_pretrained`` / ``from_pretrained``);
- ``get_pipeline()``: a seeded tiny pipeline on CPU;
- ``get_inputs(seed)``: the keyword arguments of one seeded call with ``output_type="pt"`` (a fresh
  ``torch.Generator`` each time) and a small ``num_inference_steps``;
- ``output_field``: the output attribute holding the result (``"images"``, ``"frames"``);
- ``expected_slice``: the pinned ``output[0, -1, -3:, -3:]`` of ``get_inputs(0)`` (3 x 3 floats), compared at
  ``atol=1e-2``: a change of the numbers is a change of the method;
- optionally ``get_batch_inputs(seed)`` -> ``(list of single-call inputs, one batched call's inputs)`` for the
  batch-versus-single test (pipelines whose batch axis means something else leave it out: that test then says so
  and is skipped).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch
from torch import nn

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

__all__ = ["PipelineTesterMixin"]


class PipelineTesterMixin:
    """Save/load round trip, dtype and device moves, determinism, batch versus single, progress per step and a
    pinned output slice, for any pipeline (see the module docstring for what a test class provides)."""

    pipeline_class: ClassVar[type[DiffusionPipeline]]
    output_field: ClassVar[str] = "images"
    expected_slice: ClassVar[list[list[float]]]
    atol: ClassVar[float] = 1e-4

    def get_pipeline(self) -> Any:
        raise NotImplementedError

    def get_inputs(self, seed: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    def get_batch_inputs(self, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        return None

    def run(self, pipe: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """One call; returns the output field as a float tensor."""
        with torch.no_grad():
            output = getattr(pipe(**inputs), self.output_field)
        return torch.as_tensor(output).float()

    def modules(self, pipe: Any) -> dict[str, nn.Module]:
        return {name: value for name, value in pipe.components.items() if isinstance(value, nn.Module)}

    def test_seeded_runs_are_deterministic(self) -> None:
        pipe = self.get_pipeline()
        first, second = self.run(pipe, self.get_inputs(0)), self.run(pipe, self.get_inputs(0))
        assert torch.equal(first, second)
        other = self.run(pipe, self.get_inputs(1))
        assert not torch.equal(first, other), "another seed gave the same output"

    def test_pinned_output_slice(self) -> None:
        output = self.run(self.get_pipeline(), self.get_inputs(0))
        while output.ndim > 3:
            output = output[0]
        actual = output[-1, -3:, -3:]
        expected = torch.tensor(self.expected_slice, dtype=actual.dtype)
        assert torch.allclose(actual, expected, atol=1e-2), f"output slice changed: {actual.tolist()}"

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        pipe = self.get_pipeline()
        before = self.run(pipe, self.get_inputs(0))
        pipe.save_pretrained(tmp_path / "pipeline")
        loaded = self.pipeline_class.from_pretrained(tmp_path / "pipeline")
        assert set(self.modules(loaded)) == set(self.modules(pipe))
        torch.testing.assert_close(self.run(loaded, self.get_inputs(0)), before, atol=self.atol, rtol=0)

    def test_dtype_and_device_moves(self) -> None:
        pipe = self.get_pipeline()
        before = self.run(pipe, self.get_inputs(0))
        pipe.to(torch.float64)
        for name, module in self.modules(pipe).items():
            dtypes = {p.dtype for p in module.parameters()}
            assert dtypes <= {torch.float64}, f"{name} kept {dtypes} after .to(torch.float64)"
        pipe.to(torch.float32).to("cpu")
        assert pipe.device == torch.device("cpu")
        torch.testing.assert_close(self.run(pipe, self.get_inputs(0)), before, atol=self.atol, rtol=0)

    def test_batch_equals_single_calls(self) -> None:
        batch_inputs = self.get_batch_inputs(0)
        if batch_inputs is None:
            pytest.skip(f"{self.pipeline_class.__name__}: its batch axis is not independent samples")
        singles, batched = batch_inputs
        pipe = self.get_pipeline()
        together = self.run(pipe, batched)
        apart = torch.cat([self.run(pipe, inputs) for inputs in singles])
        torch.testing.assert_close(together, apart, atol=self.atol, rtol=0)

    def test_progress_is_reported_once_per_step(self) -> None:
        pipe = self.get_pipeline()
        inputs = self.get_inputs(0)
        steps: list[Any] = []
        original = pipe.progress_bar

        class CountingBar:
            """diffusers' two progress-bar styles: ``for t in progress_bar(timesteps)`` and
            ``with progress_bar(total=n) as bar: bar.update()``."""

            def __init__(self, iterable: Any = None, total: Any = None) -> None:
                self.bar = original(iterable) if iterable is not None else original(total=total)

            def __iter__(self) -> Any:
                for item in self.bar:
                    steps.append(item)
                    yield item

            def __enter__(self) -> CountingBar:
                self.bar.__enter__()
                return self

            def __exit__(self, *exc: Any) -> None:
                self.bar.__exit__(*exc)

            def update(self, n: int = 1) -> None:
                steps.extend([None] * n)
                self.bar.update(n)

        def counting(iterable: Any = None, total: Any = None) -> CountingBar:
            return CountingBar(iterable, total)

        pipe.progress_bar = counting
        self.run(pipe, inputs)
        assert len(steps) == inputs["num_inference_steps"], steps
        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
            seen: list[int] = []

            def callback(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                seen.append(step)
                return {}

            self.run(pipe, {**self.get_inputs(0), "callback_on_step_end": callback})
            assert seen == list(range(inputs["num_inference_steps"]))

"""Notices a user did not cause are silenced where we call the library (issue #17), and only there.

The command runs with ``-v`` (which switches off the command line's own quieting, ``genblocks.cli._quiet_libraries``)
and ``-W default`` in a fresh interpreter, so import-time notices and once-per-process warnings are seen as a new user
sees them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from genblocks.notices import EMPTY_FP32_MODULES, ignore_log_records, ignore_warnings, quiet_library_imports

ROOT = Path(__file__).resolve().parents[1]

# what each notice prints (transformers' image-processor backend, diffusers' fp32 note, CLIP truncation of the tiny
# prompt, numpy's copy-keyword deprecation inside diffusers' scheduler, torchvision's deprecations)
NOTICES = (
    "requires torchvision",
    "should be kept in float32",
    "truncated because CLIP",
    "Token indices sequence length",
    "__array__ implementation",
    "torchvision",
    "bitsandbytes",
    "Warning:",
)


def run_quietly_checked(argv: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from id_patch.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "BITSANDBYTES_NOWELCOME"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow  # a fresh interpreter importing diffusers and transformers, then a tiny SDXL run
def test_id_patch_generate_prints_no_library_notice(tmp_path: Path) -> None:
    from skimage import data

    face = Image.fromarray(data.astronaut()[0:220, 140:330]).resize((256, 256))  # dlib finds this face
    for name in ("alice.png", "bob.png"):
        face.save(tmp_path / name)
    argv = ["generate", "--image", "alice.png", "bob.png", "--positions", "20,22", "44,22", "--out", "out", "-v"]
    result = run_quietly_checked(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "image.png").is_file()
    lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]
    noisy = [line for line in lines if any(notice in line for notice in NOTICES)]
    assert not noisy, "\n".join(noisy)


def test_ignore_log_records_drops_only_the_matching_message(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(EMPTY_FP32_MODULES[0])
    empty = "There are modules in UNet that should be kept in float32: []."
    named = "There are modules in UNet that should be kept in float32: ['norm']."
    with caplog.at_level(logging.WARNING), ignore_log_records(*EMPTY_FP32_MODULES):
        logger.warning(empty)
        logger.warning(named)
    logger.warning(empty)
    assert [record.getMessage() for record in caplog.records] == [named, empty]


def test_ignore_warnings_is_narrow() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with ignore_warnings("known notice", DeprecationWarning):
            warnings.warn("known notice from a library", DeprecationWarning, stacklevel=1)
            warnings.warn("known notice, other category", UserWarning, stacklevel=1)
            warnings.warn("another deprecation", DeprecationWarning, stacklevel=1)
        warnings.warn("known notice after the block", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "known notice, other category",
        "another deprecation",
        "known notice after the block",
    ]


def test_quiet_library_imports_drops_torchvision_warnings_only() -> None:
    def warn_from(module: str, category: type[Warning]) -> None:
        exec(
            "import warnings; warnings.warn('deprecated thing', category)", {"__name__": module, "category": category}
        )

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_library_imports():
            warn_from("torchvision.transforms", DeprecationWarning)
            warn_from("torchvision", UserWarning)
            warn_from("torchvisionx", UserWarning)
            warn_from("mypackage", FutureWarning)
            logging.getLogger("transformers.utils.import_utils").warning(
                "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`"
            )
    assert [w.category for w in seen] == [UserWarning, FutureWarning]


def test_diffportrait3d_takes_a_pil_portrait_without_a_warning() -> None:
    from diffportrait3d.pipeline_diffportrait3d import images_to_tensor

    portrait = Image.new("RGB", (32, 32), (255, 0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = images_to_tensor(portrait, "image", 16)
    assert tensor.shape == (1, 3, 16, 16) and float(tensor[0, 0].min()) == 1.0 and float(tensor[0, 1:].max()) == 0.0

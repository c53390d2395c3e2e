"""The one command-line convention (genblocks.cli): config resolution per command, repeatable --set, exit 2 on user
errors with one line and no traceback, --print-config, --stage and --resume."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pytest

from genblocks.cli import Command, CommandLine, available_configs, resolve_config
from genblocks.errors import InputError

SCHEMA = """
from dataclasses import dataclass, field


@dataclass
class Train:
    max_steps: int = 10
    lr: float = 1e-4
    stage: str = "image"


@dataclass
class Model:
    width: int = 8
    sizes: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Schema:
    name: str = "default"
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)

    def __post_init__(self):
        if self.model.width <= 0:
            raise ValueError(f"model.width must be positive, got {self.model.width}")
"""


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable package ``clifake_<n>`` with configs/train/{tiny,paper}.yaml and configs/generate/tiny.yaml."""
    name = f"clifake_{abs(hash(tmp_path)) % 10**8}"
    root = tmp_path / "site" / name
    (root / "configs" / "train").mkdir(parents=True)
    (root / "configs" / "generate").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "schema.py").write_text(textwrap.dedent(SCHEMA))
    (root / "configs" / "train" / "tiny.yaml").write_text("name: train-tiny\ntrain:\n  max_steps: 3\n")
    (root / "configs" / "train" / "paper.yaml").write_text("name: train-paper\ntrain:\n  max_steps: 100000\n")
    (root / "configs" / "generate" / "tiny.yaml").write_text("name: generate-tiny\nmodel:\n  width: 4\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return name


def make_cli(package: str, seen: dict) -> CommandLine:
    def run(args, config):
        seen["args"], seen["config"] = args, config
        if getattr(args, "image", None) is not None and not Path(args.image).is_file():
            raise FileNotFoundError(2, "No such file or directory", str(args.image))
        return 0

    def image_argument(parser):
        parser.add_argument("--image", type=Path)

    schema = f"{package}.schema:Schema"
    return CommandLine(
        prog="fake",
        package=package,
        description="a fake package",
        commands=(
            Command("generate", "make one", run, schema=schema, arguments=image_argument),
            Command("eval", "score", run, schema=schema, config_group="generate"),
            Command("train", "train it", run, schema=schema, stages=("image", "video"), resume=True, out=None),
            Command("demo", "a demo", run),
        ),
    )


def test_bare_names_resolve_per_command_from_any_directory(
    fake_package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: dict = {}
    cli = make_cli(fake_package, seen)
    assert cli.main(["train", "--config", "tiny", "--out", "run"]) == 0
    assert seen["config"].name == "train-tiny" and seen["config"].train.max_steps == 3
    assert cli.main(["generate", "--config", "tiny"]) == 0
    assert seen["config"].name == "generate-tiny" and seen["config"].model.width == 4
    assert cli.main(["eval"]) == 0
    assert seen["config"].name == "generate-tiny"
    assert available_configs(fake_package, "train") == ["paper", "tiny"]


def test_a_path_still_works(fake_package: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\n")
    seen: dict = {}
    assert make_cli(fake_package, seen).main(["generate", "--config", str(path)]) == 0
    assert seen["config"].name == "mine"
    assert resolve_config(fake_package, "generate", str(path)) == path


def test_set_takes_several_pairs_and_is_repeatable(fake_package: str) -> None:
    seen: dict = {}
    cli = make_cli(fake_package, seen)
    argv = ["generate", "--set", "model.width=16", "train.lr=3e-3", "--set", "model.sizes=[4, 5]", "--set", "name=x"]
    assert cli.main(argv) == 0
    config = seen["config"]
    assert (config.model.width, config.train.lr, config.model.sizes, config.name) == (16, 3e-3, [4, 5], "x")


def test_later_set_wins_for_the_same_key(fake_package: str) -> None:
    seen: dict = {}
    assert make_cli(fake_package, seen).main(["generate", "--set", "model.width=2", "--set", "model.width=6"]) == 0
    assert seen["config"].model.width == 6


def user_error(cli: CommandLine, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_unknown_key_exits_2_naming_key_and_nearest(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict = {}
    err = user_error(make_cli(fake_package, seen), ["generate", "--set", "train.max_step=5"], capsys)
    assert "unknown config key 'train.max_step'" in err and "train.max_steps" in err
    assert "config" not in seen  # failed before any work


def test_bad_value_names_key_value_and_type(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = user_error(make_cli(fake_package, {}), ["generate", "--set", "train.max_steps=many"], capsys)
    assert "train.max_steps" in err and "'many'" in err and "expected int" in err


def test_schema_check_failure_exits_2(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = user_error(make_cli(fake_package, {}), ["generate", "--set", "model.width=-1"], capsys)
    assert "model.width must be positive" in err


def test_config_help_lists_the_builtin_names(fake_package: str) -> None:
    parser = make_cli(fake_package, {}).build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    config = next(a for a in subparsers.choices["train"]._actions if a.dest == "config")
    assert config.help == "a built-in config (paper, tiny) or a YAML file"


def test_unknown_config_name_lists_the_builtins(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = user_error(make_cli(fake_package, {}), ["train", "--config", "huge", "--out", "r"], capsys)
    assert "--config huge" in err and "paper, tiny" in err


def test_missing_config_file_and_malformed_yaml(
    fake_package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = make_cli(fake_package, {})
    err = user_error(cli, ["generate", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml" in err and "no such file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    err = user_error(cli, ["generate", "--config", str(bad)], capsys)
    assert "bad.yaml" in err and "not valid YAML" in err


def test_missing_input_file_names_it_and_verbose_shows_traceback(
    fake_package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = make_cli(fake_package, {})
    missing = tmp_path / "face.png"
    err = user_error(cli, ["generate", "--image", str(missing)], capsys)
    assert str(missing) in err
    assert cli.main(["generate", "--image", str(missing), "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_print_config_prints_the_merged_yaml(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict = {}
    assert make_cli(fake_package, seen).main(["train", "--out", "r", "--set", "train.lr=0.5", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "name: train-tiny" in out and "lr: 0.5" in out and "max_steps: 3" in out
    assert "args" not in seen  # printed, not run


def test_stage_sets_the_stage_key_and_resume_is_a_flag(fake_package: str) -> None:
    seen: dict = {}
    cli = make_cli(fake_package, seen)
    assert cli.main(["train", "--out", "r", "--stage", "video", "--resume"]) == 0
    assert seen["config"].train.stage == "video" and seen["args"].resume is True
    assert cli.main(["train", "--out", "r", "--stage", "video", "--set", "train.stage=image"]) == 0
    assert seen["config"].train.stage == "image"  # an explicit --set wins over --stage


def test_out_is_a_folder_with_a_default_or_required(fake_package: str, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict = {}
    cli = make_cli(fake_package, seen)
    assert cli.main(["demo"]) == 0
    assert seen["args"].out == Path("outputs/fake/demo") and seen["config"] is None
    with pytest.raises(SystemExit) as info:
        cli.main(["train"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_verbose_is_accepted_before_and_after_the_command(fake_package: str) -> None:
    seen: dict = {}
    cli = make_cli(fake_package, seen)
    assert cli.main(["-v", "demo"]) == 0 and seen["args"].verbose is True
    assert cli.main(["demo", "-v"]) == 0 and seen["args"].verbose is True
    assert cli.main(["demo"]) == 0 and seen["args"].verbose is False


def test_input_error_is_a_value_error() -> None:
    assert issubclass(InputError, ValueError)


def test_importing_the_cli_module_is_light() -> None:
    import subprocess

    code = (
        "import sys, genblocks.cli, genblocks.tiny, genblocks.errors, genblocks.smoke; "
        "heavy = [m for m in ('torch', 'lightning', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_library_notices_are_silenced_unless_verbose(fake_package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    cli = make_cli(fake_package, {})
    assert cli.main(["demo", "-v"]) == 0
    assert "TRANSFORMERS_VERBOSITY" not in os.environ
    assert cli.main(["demo"]) == 0
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    monkeypatch.setenv("DIFFUSERS_VERBOSITY", "info")  # a user's own setting is kept
    assert cli.main(["demo"]) == 0 and os.environ["DIFFUSERS_VERBOSITY"] == "info"


def test_require_file_and_folder_name_the_flag_and_the_path(tmp_path: Path) -> None:
    from genblocks.cli import require_file, require_folder
    from genblocks.errors import InputError

    (tmp_path / "a.png").write_bytes(b"x")
    require_file(tmp_path / "a.png", "--image", "a portrait")
    require_file(None, "--image", "a portrait")
    require_folder(tmp_path, "--base", "an SD1.5 folder")
    with pytest.raises(InputError, match=r"^--image .*b\.png: file not found \(expected a portrait\)$"):
        require_file(tmp_path / "b.png", "--image", "a portrait")
    with pytest.raises(InputError, match=r"^--base .*a\.png: folder not found \(expected an SD1.5 folder\)$"):
        require_folder(tmp_path / "a.png", "--base", "an SD1.5 folder")


def test_a_package_without_group_folders_keeps_its_configs_at_the_top(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cliflat_{abs(hash(tmp_path)) % 10**8}"
    root = tmp_path / "site" / name
    (root / "configs").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "configs" / "tiny.yaml").write_text("name: flat-tiny\n")
    (root / "configs" / "paper.yaml").write_text("name: flat-paper\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert available_configs(name, "run") == ["paper", "tiny"]
    assert resolve_config(name, "run", "paper").read_text() == "name: flat-paper\n"
    with pytest.raises(
        InputError, match=r"--config sd15: no built-in 'run' config of that name \(built-in: paper, tiny\)"
    ):
        resolve_config(name, "run", "sd15")


def _cli_raising(error: BaseException) -> CommandLine:
    def run(args, config):
        raise error

    return CommandLine(prog="fake", package="fakepkg", description="d", commands=(Command("demo", "a demo", run),))


def test_a_missing_optional_library_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_raising(ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe")).main(["demo"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "fake demo: error: this command needs the module 'mediapipe', which is not installed (No module named 'mediapipe')\n"
    )
    try:
        import no_such_module_xyz  # noqa: F401
    except ImportError as cause:
        hinted = ImportError("the demo needs scikit-image: pip install 'fakepkg[demo]'")
        hinted.__cause__ = cause
    assert _cli_raising(hinted).main(["demo"]) == 2
    assert capsys.readouterr().err == "fake demo: error: the demo needs scikit-image: pip install 'fakepkg[demo]'\n"


def test_an_import_bug_of_our_own_keeps_its_traceback() -> None:
    with pytest.raises(ModuleNotFoundError):
        _cli_raising(ModuleNotFoundError("No module named 'fakepkg.gone'", name="fakepkg.gone")).main(["demo"])
    with pytest.raises(ImportError, match="cannot import name"):
        _cli_raising(ImportError("cannot import name 'Thing' from 'genblocks.media'")).main(["demo"])

"""Tests for genblocks.config: YAML + dataclass schema + dotted overrides, with errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from genblocks.config import ConfigError, config_to_yaml, load_config, load_shipped_config
from genblocks.errors import FieldError
from genblocks.training.config import TrainConfig


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Model:
    width: int = 32
    layers: list[int] = field(default_factory=lambda: [1, 2])
    name: str = "tiny"


@dataclass
class Run:
    seed: int = 0
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    output_dir: str | None = None


@dataclass
class NeedsValue:
    data_root: str = "???"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    cfg = load_config(Run)
    assert isinstance(cfg, Run)
    assert cfg.model.width == 32
    assert cfg.optim.betas == (0.9, 0.999)


def test_file_then_overrides_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 3\nmodel:\n  width: 64\n  layers: [4, 5, 6]\n")
    cfg = load_config(Run, path, ["model.width=128", "optim.lr=3e-3", "output_dir=out"])
    assert cfg.seed == 3
    assert cfg.model.width == 128
    assert cfg.model.layers == [4, 5, 6]
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.output_dir == "out"
    assert isinstance(cfg.model, Model)


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  widht: 64\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    message = str(info.value)
    assert "model.widht" in message
    assert str(path) in message
    assert "nearest valid keys: model.width" in message


def test_unknown_key_suggests_keys_in_other_sections() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'lr'; nearest valid keys: optim\.lr"):
        load_config(Run, None, ["lr=1"])


def test_unknown_override_names_command_line() -> None:
    with pytest.raises(ConfigError, match=r"command line: unknown config key 'optim\.learning_rate'"):
        load_config(Run, None, ["optim.learning_rate=1"])


def test_wrong_type_names_key_value_and_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"'model\.width' = 'wide' has the wrong type; expected int"):
        load_config(Run, None, ["model.width=wide"])


def test_wrong_type_in_file_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: fast\n")
    with pytest.raises(
        ConfigError, match=r"cfg\.yaml: config key 'optim\.lr' = 'fast' has the wrong type; expected float"
    ):
        load_config(Run, path)


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nmodel: [1,\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: line 3.*not valid YAML"):
        load_config(Run, path)


def test_override_values_parse_as_yaml_lists() -> None:
    assert load_config(Run, None, ["model.layers=[3, 4, 5]"]).model.layers == [3, 4, 5]


def test_config_error_is_an_input_error() -> None:
    from genblocks.errors import InputError

    assert issubclass(ConfigError, InputError) and issubclass(ConfigError, ValueError)


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(Run, None, ["model.width"])


def test_missing_required_value() -> None:
    with pytest.raises(ConfigError, match="'data_root' is required"):
        load_config(NeedsValue)
    assert load_config(NeedsValue, None, ["data_root=/data"]).data_root == "/data"


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(Run, "nope.yaml")


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(Run, None, ["seed=7", "model.layers=[9]"])
    path = write(tmp_path, config_to_yaml(cfg))
    assert load_config(Run, path) == cfg


def test_schema_must_be_dataclass() -> None:
    with pytest.raises(TypeError, match="dataclass"):
        load_config(dict)  # type: ignore[arg-type]


def test_smoke_module() -> None:
    from genblocks.smoke import main

    assert main() == 0


@dataclass
class Sampling:
    num_inference_steps: int = 50
    seed: int = 0


@dataclass
class Generate:
    sampling: Sampling = field(default_factory=Sampling)


def test_nearest_keys_prefer_a_key_containing_the_typed_word() -> None:
    with pytest.raises(ConfigError, match=r"nearest valid keys: sampling\.num_inference_steps"):
        load_config(Generate, None, ["sampling.steps=3"])


@dataclass
class Limits:
    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FieldError("steps", f"expected a positive integer, got {self.steps}")


@dataclass
class Inner:
    limits: Limits = field(default_factory=Limits)


@dataclass
class TwoSections:
    first: Limits = field(default_factory=Limits)
    outer: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("key", ["first.steps", "outer.limits.steps"])
def test_a_field_error_names_the_section_the_user_wrote(key: str) -> None:
    # the same schema under two names: the message names the key as written, not the schema's own name
    with pytest.raises(ConfigError, match=rf"^config: {key}: expected a positive integer, got 0$"):
        load_config(TwoSections, None, [f"{key}=0"])


@dataclass
class PackageRun:
    training: TrainConfig = field(default_factory=TrainConfig)


def test_shared_train_schema_under_another_section_name() -> None:
    with pytest.raises(ConfigError, match=r"^config: training\.max_steps: expected a positive integer, got 0$"):
        load_config(PackageRun, None, ["training.max_steps=0"])
    with pytest.raises(ConfigError, match=r"^config: training\.optimizer\.lr: expected a positive learning rate"):
        load_config(PackageRun, None, ["training.optimizer.lr=-1"])


def test_load_shipped_config_reads_a_packages_flat_or_grouped_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"shipped_{abs(hash(tmp_path)) % 10**8}"
    root = tmp_path / "site" / name
    (root / "configs" / "train").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "configs" / "tiny.yaml").write_text("seed: 3\nmodel:\n  width: 8\n")
    (root / "configs" / "paper.yaml").write_text("seed: 7\n")
    (root / "configs" / "train" / "tiny.yaml").write_text("optim:\n  lr: 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    tiny = load_shipped_config(Run, name, "tiny")
    assert (tiny.seed, tiny.model.width, tiny.optim.lr) == (3, 8, 1e-4)
    assert load_shipped_config(Run, name, "tiny", group="train").optim.lr == 0.5
    with pytest.raises(ConfigError, match=r"no shipped config 'sd15' in configs/ \(shipped: paper, tiny\)"):
        load_shipped_config(Run, name, "sd15")
    with pytest.raises(ConfigError, match=r"in configs/eval/ \(shipped: none\)"):
        load_shipped_config(Run, name, "tiny", group="eval")
    (root / "configs" / "bad.yaml").write_text("sead: 1\n")
    with pytest.raises(ConfigError, match="sead"):
        load_shipped_config(Run, name, "bad")

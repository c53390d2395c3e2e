"""NVIDIA network pickles read without running their code; load_eg3d from state dicts and pickles.

The test pickles are written the way ``torch_utils.persistence`` writes them (``_reconstruct_persistent_obj(meta)``
with the module source and the module ``__dict__``), by a throw-away ``torch_utils`` package whose reconstructor and
embedded source raise when executed: an ordinary ``pickle.load`` trips on them, the restricted reader must not.
"""

from __future__ import annotations

import copy
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.errors import InputError
from genblocks.gan import TINY_EG3D, load_eg3d, read_network_pickle, tiny_eg3d
from genblocks.gan.dual_discriminator import DualDiscriminator

TRAP_SOURCE = 'raise RuntimeError("embedded network source was executed")\n'

PERSISTENCE = '''
def _reconstruct_persistent_obj(meta):
    raise RuntimeError("the persistence reconstructor was executed")


class EasyDict(dict):
    pass


class Persistent:
    """Pickles ``module`` as torch_utils.persistence does."""

    def __init__(self, module, class_name, init_kwargs):
        self.module, self.class_name, self.init_kwargs = module, class_name, init_kwargs

    def __reduce__(self):
        state = dict(self.module.__dict__)
        state["_init_args"] = ()
        state["_init_kwargs"] = self.init_kwargs
        meta = dict(type="class", version=4, module_src=SOURCE, class_name=self.class_name, state=state)
        return (_reconstruct_persistent_obj, (meta,))
'''


@pytest.fixture
def persistence(tmp_path: Path):
    """A ``torch_utils.persistence`` module, importable only while the fixture runs."""
    package = tmp_path / "fake_site" / "torch_utils"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "persistence.py").write_text(f"SOURCE = {TRAP_SOURCE!r}\n" + textwrap.dedent(PERSISTENCE))
    sys.path.insert(0, str(package.parent))
    import torch_utils.persistence as module

    yield module
    sys.path.remove(str(package.parent))
    for name in [n for n in sys.modules if n.startswith("torch_utils")]:
        del sys.modules[name]


def write_snapshot(persistence, path: Path, protocol: int) -> dict[str, torch.nn.Module]:
    generator = tiny_eg3d(seed=1)
    discriminator = DualDiscriminator(img_resolution=32, channel_base=256, channel_max=32)
    networks = {"G": generator, "D": discriminator, "G_ema": copy.deepcopy(generator)}
    with torch.no_grad():
        next(networks["G_ema"].parameters()).add_(1.0)  # G_ema differs from G
    kwargs = persistence.EasyDict(
        z_dim=32, rendering_kwargs=persistence.EasyDict(box_warp=1.0, ray_start=2.25), scale=np.float32(0.5)
    )
    data = {name: persistence.Persistent(net, type(net).__name__, kwargs) for name, net in networks.items()}
    data["augment_pipe"] = None
    data["training_set_kwargs"] = {"resolution": 32, "mean": np.arange(3, dtype=np.float64)}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return networks


@pytest.mark.parametrize("protocol", [2, 4])
def test_every_tensor_is_recovered_bit_for_bit_without_running_code(
    persistence, tmp_path: Path, protocol: int
) -> None:
    path = tmp_path / "network-snapshot.pkl"
    networks = write_snapshot(persistence, path, protocol)
    with pytest.raises(RuntimeError, match="reconstructor was executed"):
        pickle.loads(path.read_bytes())  # the trap is real: an ordinary unpickler runs the pickled code
    records = read_network_pickle(path)
    assert sorted(records) == ["D", "G", "G_ema"]
    for name, network in networks.items():
        record = records[name]
        expected = network.state_dict()
        assert record.state_dict.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert torch.equal(record.state_dict[key], tensor) and record.state_dict[key].dtype == tensor.dtype, key
        assert record.class_name == type(network).__name__
        assert record.source_text == TRAP_SOURCE
        assert record.init_kwargs["z_dim"] == 32 and record.init_kwargs["rendering_kwargs"] == {
            "box_warp": 1.0,
            "ray_start": 2.25,
        }
        assert record.init_kwargs["scale"] == np.float32(0.5)
    g, g_ema = records["G"].state_dict, records["G_ema"].state_dict
    assert any(not torch.equal(g[key], g_ema[key]) for key in g)  # each network is read from its own entry


def test_numpy_1_pickles_read_under_numpy_2(persistence, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.pkl"
    write_snapshot(persistence, path, protocol=2)
    raw = path.read_bytes()
    numpy_1 = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    if np.__version__.startswith("2"):
        assert numpy_1 != raw  # the numpy 2 names were there to rewrite
    old = tmp_path / "numpy1.pkl"
    old.write_bytes(numpy_1)
    records = read_network_pickle(old, names=("G",))
    assert records["G"].init_kwargs["scale"] == np.float32(0.5)


def test_load_eg3d_from_a_pickle_and_from_state_dicts(persistence, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.pkl"
    networks = write_snapshot(persistence, path, protocol=4)
    loaded = load_eg3d(path, tiny_eg3d(seed=7))
    for key, tensor in networks["G_ema"].state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    torch.save(networks["G"].state_dict(), tmp_path / "g.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in networks["G"].state_dict().items()}, tmp_path / "g.safetensors")
    for file in ("g.pt", "g.safetensors"):
        loaded = load_eg3d(tmp_path / file, tiny_eg3d(seed=7))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in networks["G"].state_dict().items())


def test_clear_errors(persistence, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_network_pickle(tmp_path / "missing.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match="not a readable pickle"):
        read_network_pickle(junk)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(InputError, match=r"none of \['G', 'D', 'G_ema'\]"):
        read_network_pickle(other)
    path = tmp_path / "snapshot.pkl"
    write_snapshot(persistence, path, protocol=4)
    with pytest.raises(InputError, match="do not fit the generator"):
        load_eg3d(path, tiny_eg3d(plane_channels=4))
    assert TINY_EG3D["plane_channels"] == 8

"""Reference attention bank: write/read/off processors on tiny SD1.5- and SDXL-shaped UNets."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from genblocks.diffusion.reference_attention import (
    ReferenceAttnProcessor,
    ReferenceBank,
    attach_reference_attention,
    attach_reference_pair,
    detach_reference_attention,
    reference_layer_names,
    reference_mode,
    set_reference_mode,
    write_reference_bank,
)
from genblocks.tiny import tiny_sdxl_unet, tiny_unet


def _make(kind: str, seed: int) -> UNet2DConditionModel:
    return (tiny_unet if kind == "sd15" else tiny_sdxl_unet)(seed=seed).eval()


def _run(unet: UNet2DConditionModel, sample: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """One UNet call with seeded text context (and SDXL added conditions) for ``sample`` (B, 4, 8, 8)."""
    batch = sample.shape[0]
    gen = torch.Generator().manual_seed(seed)
    context = torch.randn(1, 5, unet.config.cross_attention_dim, generator=gen).expand(batch, -1, -1)
    added = None
    if unet.config.addition_embed_type == "text_time":
        added = {"text_embeds": torch.randn(1, 32, generator=gen).expand(batch, -1), "time_ids": torch.ones(batch, 6)}
    return unet(sample, 10, context, added_cond_kwargs=added).sample


def _latents(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_empty_bank_off_mode_and_detach_equal_plain_unet(kind: str) -> None:
    unet, reference = _make(kind, 0), _make(kind, 1)
    x = _latents(2, 0)
    with torch.no_grad():
        plain = _run(unet, x)
        bank = ReferenceBank()
        attach_reference_attention(unet, bank, "read")
        attach_reference_attention(reference, bank, "write")
        assert torch.allclose(_run(unet, x), plain, atol=1e-6, rtol=0)  # empty bank: plain attention

        _run(reference, _latents(2, 5))
        assert len(bank) == len(reference_layer_names(unet))
        read = _run(unet, x)
        assert (read - plain).abs().max() > 1e-4  # the bank is used
        with reference_mode(unet, "off"):
            assert torch.allclose(_run(unet, x), plain, atol=1e-6, rtol=0)
        assert torch.equal(_run(unet, x), read)  # previous mode restored

        detach_reference_attention(unet)
        assert not any(isinstance(p, ReferenceAttnProcessor) for p in unet.attn_processors.values())
        assert torch.allclose(_run(unet, x), plain, atol=1e-6, rtol=0)


def test_write_stores_norm1_input_in_execution_order() -> None:
    reference = _make("sd15", 1)
    bank = ReferenceBank()
    names = attach_reference_attention(reference, bank, "write")
    assert [n.split(".")[0] for n in names] == ["down_blocks", "mid_block", "up_blocks", "up_blocks"]  # down, mid, up

    seen: list[tuple[str, torch.Tensor]] = []
    for name in names:
        block = reference.get_submodule(name.removesuffix(".attn1.processor"))
        block.norm1.register_forward_hook(lambda m, a, out, n=name: seen.append((n, out.detach().clone())))
    with torch.no_grad():
        _run(reference, _latents(2, 5))
    assert bank.layer_names == [n for n, _ in seen] == names
    for index, (name, norm1_out) in enumerate(seen):
        assert torch.equal(bank[name], norm1_out)  # (B, HW, C)
        assert torch.equal(bank[index], norm1_out)
    assert tuple(bank[names[0]].shape) == (2, 64, 32)


def _explicit_attention(attn: torch.nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with Q from ``x`` and K, V from ``context``, then the output projection."""
    batch, heads = x.shape[0], attn.heads
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    d = q.shape[-1] // heads
    q, k, v = (t.reshape(batch, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, -1, heads * d)
    return attn.to_out[0](out)


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_read_equals_explicit_attention_over_concatenated_tokens(kind: str) -> None:
    unet, reference = _make(kind, 0), _make(kind, 1)
    bank = ReferenceBank()
    names = attach_reference_attention(unet, bank, "read")
    attach_reference_attention(reference, bank, "write")
    captured: dict[str, torch.Tensor] = {}
    layer = names[-1]
    attn1 = unet.get_submodule(layer.removesuffix(".processor"))

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        captured["x"], captured["out"] = args[0].detach().clone(), out.detach().clone()

    attn1.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        _run(reference, _latents(2, 5))
        _run(unet, _latents(2, 0))
        x = captured["x"]
        context = torch.cat([x, bank[layer]], dim=1)
        assert context.shape[1] == 2 * x.shape[1]  # HW -> 2 HW tokens with one reference
        expected = _explicit_attention(attn1, x, context)
    assert torch.allclose(captured["out"], expected, atol=1e-5, rtol=1e-5)


def test_multiple_references_concatenate_along_tokens() -> None:
    unet, reference = _make("sd15", 0), _make("sd15", 1)
    ref_a, ref_b = _latents(2, 5), _latents(2, 6)
    # (a) one reference pass over a (b r) batch with num_references=2
    stacked = torch.stack([ref_a, ref_b], dim=1).reshape(4, 4, 8, 8)
    bank_batched = ReferenceBank(num_references=2)
    attach_reference_attention(reference, bank_batched, "write")
    with torch.no_grad():
        _run(reference, stacked)
    # (b) two reference passes appending to one bank
    bank_appended = ReferenceBank()
    attach_reference_attention(reference, bank_appended, "write")
    with torch.no_grad():
        _run(reference, ref_a)
        _run(reference, ref_b)
    assert bank_batched[0].shape == (2, 2 * 64, 32)  # two 8x8 references -> 128 tokens
    assert bank_batched.layer_names == bank_appended.layer_names
    for name in bank_batched.layer_names:
        assert torch.allclose(bank_batched[name], bank_appended[name], atol=1e-5)

    attach_reference_attention(unet, bank_batched, "read")
    with torch.no_grad():
        out_batched = _run(unet, _latents(2, 0))
        attach_reference_attention(unet, bank_appended, "read")
        out_appended = _run(unet, _latents(2, 0))
        attach_reference_attention(unet, ReferenceBank(), "read")
        plain = _run(unet, _latents(2, 0))
    assert torch.allclose(out_batched, out_appended, atol=1e-5)
    assert (out_batched - plain).abs().max() > 1e-4


def test_bank_repeats_across_frames() -> None:
    unet, reference = _make("sd15", 0), _make("sd15", 1)
    frames = 3
    ref = _latents(1, 5)
    bank = ReferenceBank()  # written from one reference, read by a (b f) batch of 3 frames
    repeated = ReferenceBank(num_frames=1)  # written from the reference repeated per frame
    with torch.no_grad():
        attach_reference_attention(reference, bank, "write")
        _run(reference, ref)
        attach_reference_attention(reference, repeated, "write")
        _run(reference, ref.expand(frames, -1, -1, -1))
        video = _latents(frames, 0)
        attach_reference_attention(unet, bank, "read")
        out = _run(unet, video)
        attach_reference_attention(unet, repeated, "read")
        expected = _run(unet, video)
    assert torch.allclose(out, expected, atol=1e-5)

    explicit = ReferenceBank(num_frames=2)  # explicit frame count that does not fit the batch
    explicit.write("layer", torch.zeros(1, 4, 8))
    with pytest.raises(ValueError, match="num_frames"):
        explicit.read("layer", 3)
    assert explicit.read("layer", 2).shape == (2, 4, 8)


def test_midup_fusion_leaves_down_blocks_and_cross_attention_alone() -> None:
    unet = _make("sd15", 0)
    before = unet.attn_processors
    bank = ReferenceBank()
    names = attach_reference_attention(unet, bank, "read", fusion_blocks="midup")
    after = unet.attn_processors
    assert names == reference_layer_names(unet, "midup")
    assert all(n.startswith(("mid_block.", "up_blocks.")) for n in names) and len(names) == 3
    for name, processor in after.items():
        if name in names:
            assert isinstance(processor, ReferenceAttnProcessor) and processor.base is before[name]
        else:
            assert processor is before[name]  # attn2 everywhere and down-block attn1 untouched

    reference = _make("sd15", 1)
    attach_reference_attention(reference, bank, "write", fusion_blocks="midup")
    with torch.no_grad():
        _run(reference, _latents(2, 5))
    assert bank.layer_names == names


def test_gradients_reach_the_reference_unet_through_the_bank() -> None:
    unet, reference = _make("sd15", 0), _make("sd15", 1)
    unet.requires_grad_(False)
    bank = ReferenceBank()
    attach_reference_attention(unet, bank, "read")
    attach_reference_attention(reference, bank, "write")
    _run(reference, _latents(2, 5))
    _run(unet, _latents(2, 0)).square().mean().backward()
    grads = [p.grad for p in reference.down_blocks[0].attentions[0].parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_errors_name_the_problem() -> None:
    unet = _make("sd15", 0)
    with pytest.raises(ValueError, match="no reference attention attached"):
        set_reference_mode(unet, "off")
    with pytest.raises(ValueError, match="role"):
        attach_reference_attention(unet, ReferenceBank(), "off")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fusion_blocks"):
        reference_layer_names(unet, "down")  # type: ignore[arg-type]
    attach_reference_attention(unet, ReferenceBank(), "read")
    with pytest.raises(ValueError, match="mode"):
        set_reference_mode(unet, "readwrite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_references"):
        ReferenceBank(num_references=2).write("layer", torch.zeros(3, 4, 8))
    bank = ReferenceBank()
    bank.write("a", torch.zeros(1, 4, 8))
    with pytest.raises(KeyError, match="no reference written"):
        bank.read("b", 1)


def test_reference_pair_attaches_checks_and_writes_the_bank() -> None:
    unet, reference = tiny_unet(seed=0).eval(), tiny_unet(seed=1).eval()
    bank = ReferenceBank()
    with pytest.raises(ValueError, match="separate UNet"):
        attach_reference_pair(unet, unet, bank)
    layers = attach_reference_pair(reference, unet, bank)
    assert layers == reference_layer_names(unet)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 5, unet.config.cross_attention_dim)
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        write_reference_bank(reference, bank, latents[None], 10, text)
    with torch.no_grad():
        write_reference_bank(reference, bank, latents, 10, text)
        assert not bank.is_empty()
        with reference_mode(unet, "read"):
            read = unet(latents, 10, encoder_hidden_states=text).sample
        with reference_mode(unet, "off"):
            plain = unet(latents, 10, encoder_hidden_states=text).sample
    assert (read - plain).abs().max() > 1e-4

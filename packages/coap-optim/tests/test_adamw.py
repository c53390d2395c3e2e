"""CoapAdamW against torch.optim.AdamW, the authors' HF-style arithmetic, and an inline reference of COAP (§3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from coap_testing import TINY_PROJECTION, max_param_diff, tiny_batches, tiny_model, train
from torch import nn

from coap_optim import CoapAdamW
from coap_optim.tucker import hooi

# ---------------------------------------------------------------------------------------------------------------------
# Inline reference of the published algorithm (spec §3), written from the official code's arithmetic: autograd refresh,
# range finder with a CPU-seeded Omega, the t % T_u schedule, restore_state, HF-style Adam with decay after the update.
# Tucker factors come from coap_optim.tucker.hooi (tested in test_tucker.py); everything else is independent code.
# ---------------------------------------------------------------------------------------------------------------------


def ref_range_finder(a: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(a @ omega, mode="reduced")
    return torch.linalg.svd(q.T @ a, full_matrices=False).Vh


class ReferenceCoap:
    """COAP AdamW (official convention) on a model, one tensor at a time, with autograd for the refresh."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        restore_state: bool,
        refresh: bool = True,
        convention: str = "official",
        scale: float = 1.0,
        eps: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        proj_lr: float = 0.1,
        reproject_factor: int = TINY_PROJECTION["reproject_factor"],
    ) -> None:
        self.proj_lr = proj_lr
        self.model, self.lr, self.wd, self.restore, self.refresh = model, lr, weight_decay, restore_state, refresh
        self.convention, self.scale, self.eps, self.betas = convention, scale, eps, betas
        self.ratio, self.ratio_conv = TINY_PROJECTION["rank_ratio"], TINY_PROJECTION["rank_ratio_conv"]
        self.interval, self.factor = TINY_PROJECTION["update_interval"], reproject_factor
        self.state: dict[nn.Parameter, dict] = {}

    # projections ---------------------------------------------------------------------------------------------------
    @staticmethod
    def proj(x, factors, kind):
        if kind == "right":
            return x @ factors[0].T
        if kind == "left":
            return factors[0].T @ x
        return torch.einsum("abcd,am,bn->mncd", x, factors[0], factors[1])

    @staticmethod
    def back(y, factors, kind):
        if kind == "right":
            return y @ factors[0]
        if kind == "left":
            return factors[0] @ y
        return torch.einsum("mncd,am,bn->abcd", y, factors[0], factors[1])

    def kind_of(self, p):
        if p.dim() == 2:
            return "right" if p.shape[0] >= p.shape[1] else "left"
        if p.dim() == 4 and p.numel() > 9216:
            return "tucker"
        return "plain"

    def fresh_factors(self, g, kind, old=None):
        if kind == "tucker":
            ranks = [int(max(1, s // math.sqrt(self.ratio_conv))) for s in g.shape[:2]]
            return hooi(g, ranks, [0, 1])
        r = max(min(g.shape) // self.ratio, 1)
        a = g if kind == "right" else g.T
        if old is None:
            omega = torch.randn(a.shape[1], r, generator=torch.Generator().manual_seed(3407))
        else:
            omega = old[0].T if kind == "right" else old[0]
        vh = ref_range_finder(a, omega)
        return [vh if kind == "right" else vh.T]

    def refreshed(self, factors, exp_avg, g, kind):
        work = [f.clone().requires_grad_(True) for f in factors]
        with torch.enable_grad():
            recon = self.back(self.proj(g, work, kind), work, kind)
            loss = F.mse_loss(recon, g) * (1 - F.cosine_similarity(self.back(exp_avg, work, kind), g, dim=1).mean())
            loss.backward()
        out = []
        for w in work:
            torch.nn.utils.clip_grad_norm_([w], max_norm=1.0)
            out.append((w - self.proj_lr * w.grad).detach())
        return out

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        for p in self.model.parameters():
            g, kind = p.grad, self.kind_of(p)
            st = self.state.setdefault(p, {"step": 0})
            t = st["step"]
            if kind != "plain":
                if "factors" not in st:
                    st["factors"] = self.fresh_factors(g, kind)
                    low = self.proj(g, st["factors"], kind)
                    st["m"], st["v"] = torch.zeros_like(low), torch.zeros_like(low)
                elif t % self.interval == 0:
                    old = st["factors"]
                    if self.restore:
                        full_m, full_s = self.back(st["m"], old, kind), self.back(st["v"].sqrt(), old, kind)
                    if t % (self.interval * self.factor) == 0:
                        new = self.fresh_factors(g, kind, None if kind == "tucker" else old)
                    elif self.refresh:
                        new = self.refreshed(old, st["m"], g, kind)
                    else:
                        new = old
                    if self.restore:
                        st["m"], st["v"] = self.proj(full_m, new, kind), self.proj(full_s, new, kind) ** 2
                    st["factors"] = new
                grad = self.proj(g, st["factors"], kind)
            else:
                grad = g
                if "m" not in st:
                    st["m"], st["v"] = torch.zeros_like(g), torch.zeros_like(g)
            st["step"] += 1
            step = st["step"]
            st["m"] = beta1 * st["m"] + (1 - beta1) * grad
            st["v"] = beta2 * st["v"] + (1 - beta2) * grad * grad
            bc1, bc2 = 1 - beta1**step, 1 - beta2**step
            scale = self.scale if kind != "plain" else 1.0
            if self.convention == "official":
                update = st["m"] / (st["v"].sqrt() + self.eps)
                step_size = self.lr * math.sqrt(bc2) / bc1
            else:
                update = st["m"] / (st["v"].sqrt() / math.sqrt(bc2) + self.eps)
                step_size = self.lr / bc1
            full = self.back(update, st["factors"], kind) * scale if kind != "plain" else update
            if self.convention == "official":
                p.sub_(step_size * full)
                p.mul_(1 - self.lr * self.wd)
            else:
                p.mul_(1 - self.lr * self.wd)
                p.sub_(step_size * full)


def run_reference(batches, *, loss_scale: float = 1.0, **kwargs):
    model = tiny_model()
    ref = ReferenceCoap(model, **kwargs)
    for x, img, target in batches:
        model.zero_grad(set_to_none=True)
        (model(x, img, target) * loss_scale).backward()
        ref.step()
    model.reference = ref
    return model


def reference_state(model: nn.Module, param: nn.Parameter) -> list[torch.Tensor]:
    return model.reference.state[param]["factors"]


# ---------------------------------------------------------------------------------------------------------------------
# Unprojected path
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("rank", [None, 64])
def test_unprojected_matches_torch_adamw(weight_decay: float, rank: int | None) -> None:
    """rank=None (no projection) and rank >= min(shape) (fallback) both equal torch.optim.AdamW to 1e-6."""
    batches = tiny_batches(6)
    ours, theirs = tiny_model(), tiny_model()
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": weight_decay}
    opt = CoapAdamW(ours.parameters(), rank=rank, convention="torch", **kwargs)
    train(ours, opt, batches)
    train(theirs, torch.optim.AdamW(theirs.parameters(), **kwargs), batches)
    assert max_param_diff(ours, theirs) < 1e-6
    assert max_param_diff(ours, tiny_model()) > 1e-2  # the optimizers moved the weights
    assert all("P" not in s for s in opt.state.values())


def test_rank_fallback_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model()
    with caplog.at_level("INFO", logger="coap_optim"):
        opt = CoapAdamW(model.parameters(), rank=32)
        train(model, opt, tiny_batches(3))
    messages = [r.getMessage() for r in caplog.records if "full-size (unprojected) moments" in r.getMessage()]
    assert len(messages) == 1
    assert "rank 32 >= min(32, 64) = 32" in messages[0] and "rank 32 >= min(64, 32) = 32" in messages[0]


def hf_adamw_reference(model: nn.Module, batches, *, lr, betas, eps, weight_decay) -> None:
    """The authors' HF-style AdamW (transformers.AdamW): eps before bias correction, decay after the update."""
    state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in model.parameters()}
    for t, (x, img, target) in enumerate(batches, start=1):
        model.zero_grad(set_to_none=True)
        model(x, img, target).backward()
        with torch.no_grad():
            for p in model.parameters():
                m, v = state[p]
                m.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
                v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
                step_size = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
                p.addcdiv_(m, v.sqrt().add(eps), value=-step_size)
                p.add_(p, alpha=-lr * weight_decay)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_unprojected_matches_official_hf_arithmetic(weight_decay: float) -> None:
    batches = tiny_batches(6)
    ours, theirs = tiny_model(), tiny_model()
    train(ours, CoapAdamW(ours.parameters(), lr=1e-2, weight_decay=weight_decay), batches)
    hf_adamw_reference(theirs, batches, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay)
    assert max_param_diff(ours, theirs) < 1e-6
    # The two conventions really differ (so the comparisons above can fail).
    torch_conv = tiny_model()
    opt = CoapAdamW(torch_conv.parameters(), lr=1e-2, weight_decay=weight_decay, convention="torch")
    train(torch_conv, opt, batches)
    assert max_param_diff(ours, torch_conv) > 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# Projected path against the inline reference
# ---------------------------------------------------------------------------------------------------------------------


# The loss is scaled by 1000 so that the refresh gradient is clipped and P really moves (with the raw tiny-model loss a
# refresh changes the weights by < 1e-5, which a 1e-5 comparison could not see; Adam itself is scale invariant).
LOSS_SCALE = 1000.0


@pytest.mark.parametrize("restore_state", [False, True])
@pytest.mark.parametrize("convention", ["official", "torch"])
def test_coap_matches_inline_reference(restore_state: bool, convention: str) -> None:
    """Six steps, both sides and Tucker, to 3e-5 (the two runs order their float sums differently: 1e-6 on most CPUs,
    1.03e-5 measured on an AVX-512 Xeon whose GEMM kernels round otherwise).

    restore_state=False: t=0 init, t=2 refresh, t=4 re-projection. restore_state=True: reproject_factor=3, so the
    moments are rotated at two refreshes (t=2, t=4); see the next test for rotation at a re-projection.
    """
    batches = tiny_batches(6)
    factor = 3 if restore_state else 2
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "restore_state": restore_state, "convention": convention, "scale": 0.5}
    ours = tiny_model()
    opt = CoapAdamW(ours.parameters(), **{**TINY_PROJECTION, "reproject_factor": factor}, **kwargs)
    train(ours, opt, batches, loss_scale=LOSS_SCALE)
    reference = run_reference(batches, loss_scale=LOSS_SCALE, reproject_factor=factor, **kwargs)
    assert max_param_diff(ours, reference) < 3e-5
    # Same projections, up to the sign of each singular vector (P.T P for RIGHT, P P.T for LEFT, U U.T for Tucker).
    for name, gram in (("lin1", lambda f: f @ f.T), ("lin2", lambda f: f.T @ f)):
        ours_p = opt.state[getattr(ours, name).weight]["P"]
        ref_p = reference_state(reference, getattr(reference, name).weight)[0]
        assert torch.allclose(gram(ours_p), gram(ref_p), atol=1e-4)
    for i in range(2):
        ours_u = opt.state[ours.conv.weight][f"P{i}"]
        ref_u = reference_state(reference, reference.conv.weight)[i]
        assert torch.allclose(ours_u @ ours_u.T, ref_u @ ref_u.T, atol=1e-4)
    assert all(int(s["step"]) == 6 for s in opt.state.values())
    assert opt.state[ours.lin1.weight]["P"].shape == (32, 16)  # LEFT (m, r)
    assert opt.state[ours.lin2.weight]["P"].shape == (16, 32)  # RIGHT (r, n)
    assert opt.state[ours.conv.weight]["P0"].shape == (64, 45) and opt.state[ours.conv.weight]["P1"].shape == (32, 22)


def test_restore_state_at_reprojection_matches_reference() -> None:
    """restore_state=True with the re-projection at t=4.

    Rotating into a fresh subspace is ill-conditioned: directions new to the subspace get M and sqrt(V) at rounding
    level, and N = M / (sqrt(V) + eps) amplifies the ~1e-6 differences of the range finder. Steps up to t=3 match to
    1e-5; after the re-projection the weights match to 5e-3 (the re-projection itself moves them by > 0.1).
    """
    batches = tiny_batches(6)
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "restore_state": True, "scale": 0.5}
    ours = tiny_model()
    opt = CoapAdamW(ours.parameters(), **TINY_PROJECTION, **kwargs)
    train(ours, opt, batches[:4], loss_scale=LOSS_SCALE)
    assert max_param_diff(ours, run_reference(batches[:4], loss_scale=LOSS_SCALE, **kwargs)) < 1e-5
    train(ours, opt, batches[4:], loss_scale=LOSS_SCALE)
    reference = run_reference(batches, loss_scale=LOSS_SCALE, **kwargs)
    no_restore = run_reference(batches, loss_scale=LOSS_SCALE, **{**kwargs, "restore_state": False})
    assert max_param_diff(ours, reference) < 5e-3
    assert max_param_diff(reference, no_restore) > 0.1


def test_reference_comparison_is_sensitive_to_the_refresh() -> None:
    """Skipping the refresh at t=2 changes the weights by far more than the 1e-5 tolerance used above."""
    batches = tiny_batches(6)
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "restore_state": False, "scale": 0.5, "loss_scale": LOSS_SCALE}
    with_refresh = run_reference(batches, **kwargs)
    without_refresh = run_reference(batches, refresh=False, **kwargs)
    assert max_param_diff(with_refresh, without_refresh) > 1e-3


def test_projection_changes_on_schedule() -> None:
    """P is created at t=0, kept at odd t, refreshed at t=2 and re-projected at t=4."""
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), lr=1e-2, **TINY_PROJECTION)
    snapshots = []
    for batch in tiny_batches(6):
        train(model, opt, [batch])
        snapshots.append(opt.state[model.lin2.weight]["P"].clone())
    changed = [not torch.equal(snapshots[i], snapshots[i - 1]) for i in range(1, 6)]
    # P used at step i (t = i) is stored after step i: changes at t = 2 and t = 4 only.
    assert changed == [False, True, False, True, False]


@pytest.mark.parametrize("side", ["left", "right"])
def test_svd_projection_matches_galore_reference(side: str) -> None:
    """projection="svd": P = top-r singular vectors of G, recomputed every T_u steps (GaLore)."""
    torch.manual_seed(0)
    shape = (24, 40) if side == "left" else (40, 24)
    weight = nn.Parameter(torch.randn(shape))
    ref_weight = weight.detach().clone()
    grads = [torch.randn(shape) for _ in range(5)]
    opt = CoapAdamW([weight], lr=1e-2, rank=6, update_interval=2, projection="svd")
    m = v = proj = None
    for t, g in enumerate(grads):
        weight.grad = g.clone()
        opt.step()
        if t % 2 == 0:
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
            proj = vh[:6] if side == "right" else u[:, :6]
        low = g @ proj.T if side == "right" else proj.T @ g
        m = low * 0.1 if m is None else 0.9 * m + 0.1 * low
        v = low * low * 0.001 if v is None else 0.999 * v + 0.001 * low * low
        n = m / (v.sqrt() + 1e-6)
        step_size = 1e-2 * math.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        ref_weight -= step_size * (n @ proj if side == "right" else proj @ n)
        assert torch.allclose(weight.detach(), ref_weight, atol=1e-6, rtol=0)


def test_random_projection_is_seeded_and_resampled() -> None:
    batches = tiny_batches(6)

    def run(seed: int):
        model = tiny_model()
        opt = CoapAdamW(model.parameters(), lr=1e-2, rank=8, update_interval=2, projection="random", seed=seed)
        history = []
        for batch in batches:
            train(model, opt, [batch])
            history.append(opt.state[model.lin2.weight]["P"].clone())
        return model, opt, history

    a, opt_a, hist_a = run(11)
    b, _, hist_b = run(11)
    c, _, _ = run(12)
    assert max_param_diff(a, b) == 0.0
    assert max_param_diff(a, c) > 1e-4
    assert [not torch.equal(hist_a[i], hist_a[i - 1]) for i in range(1, 6)] == [False, True, False, True, False]
    assert all(torch.equal(x, y) for x, y in zip(hist_a, hist_b))
    # Two tensors with the same shape would still get different projections (seed includes the parameter index).
    p1, p2 = opt_a.state[a.lin1.weight]["P"], opt_a.state[a.lin2.weight]["P"]
    assert p1.shape == (32, 8) and p2.shape == (8, 32)
    assert not torch.allclose(p1.T, p2)
    # Flora's scaling: entries ~ N(0, 1/r).
    assert abs(float(p2.std()) - 1 / math.sqrt(8)) < 0.05


def test_per_layer_seed_changes_initial_projection() -> None:
    def initial_p(per_layer_seed: bool) -> torch.Tensor:
        model = tiny_model()
        opt = CoapAdamW(model.parameters(), rank=8, per_layer_seed=per_layer_seed)
        train(model, opt, tiny_batches(1))
        return opt.state[model.lin2.weight]["P"]

    same, other = initial_p(False), initial_p(False)
    assert torch.equal(same, other)
    projected_same = same.T @ same
    projected_other = initial_p(True).T @ initial_p(True)
    assert not torch.allclose(projected_same, projected_other, atol=1e-4)


def test_bf16_parameters_keep_fp32_state() -> None:
    model = tiny_model(dtype=torch.bfloat16)
    opt = CoapAdamW(model.parameters(), lr=1e-2, **TINY_PROJECTION)
    losses = train(model, opt, tiny_batches(6))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for state in opt.state.values():
        for key, value in state.items():
            assert value.dtype == (torch.int64 if key == "step" else torch.float32), key
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_closure_and_skipped_parameters() -> None:
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), lr=1e-2, **TINY_PROJECTION)
    x, img, target = tiny_batches(1)[0]
    model.norm.weight.requires_grad_(False)

    def closure():
        opt.zero_grad()
        loss = model(x, img, target)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    assert model.norm.weight not in opt.state
    assert int(opt.state[model.lin1.weight]["step"]) == 1

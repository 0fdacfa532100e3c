"""Peer-library helpers shared by the benchmarks."""

from __future__ import annotations


def zennit_runner(torch, model, make_composite):
    """``run(x, t) -> relevance``: zennit's relevance for targets ``t`` with the target logit as the seed (jaxvx's
    default seed); ``make_composite()`` builds a fresh composite for each call."""
    def run(x, t):
        x = x.detach().requires_grad_(True)
        with make_composite().context(model) as modified:
            out = modified(x)
            seed = torch.zeros_like(out)
            idx = torch.arange(len(t), device=t.device)
            seed[idx, t] = out[idx, t].detach()
            (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)
        return rel

    return run

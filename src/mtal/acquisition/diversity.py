"""Diversity models of the MTAL strategy: a feature auto-encoder and a code discriminator.

The auto-encoder compresses the concatenated, pooled task-head features to a code
(512-d by default) by MSE reconstruction; the discriminator (VAAL-style) tells labelled
from unlabelled codes. Both are small, trained from scratch at every selection, seeded,
and never touch the global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtal.buffers import float32_buffer


def pooled_task_features(
    task_features: Mapping[str, torch.Tensor], names: Sequence[str], grid: int
) -> torch.Tensor:
    """Adaptive-average-pool every task feature map ``F_t`` (B×C_t×h×w) to ``grid×grid``,
    concatenate them in ``names`` order along channels and flatten → ``[B, ΣC_t·grid²]``."""
    missing = [n for n in names if n not in task_features]
    if missing:
        raise ValueError(
            f"the model returned no task_features for {missing}; the mtal strategy needs "
            "MultiTaskOutput.task_features for every task"
        )
    parts = [F.adaptive_avg_pool2d(task_features[n].float(), grid) for n in names]
    return torch.cat(parts, dim=1).flatten(1)


def standardise(features: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """Per-channel zero mean / unit std over samples and grid cells of ``[N, C, g, g]``
    features (channels of different heads have different scales); ``inplace`` overwrites
    ``features`` (the same numbers, no N-sized temporaries)."""
    mean = features.mean(dim=(0, 2, 3), keepdim=True)
    std = features.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-6)
    if inplace:
        return features.sub_(mean).div_(std)
    return (features - mean) / std


class FeatureAutoEncoder(nn.Module):
    """Conv encoder ``C×g×g → code_dim`` and its mirror decoder (no striding, any grid).

    ``variational=True`` (VAAL, Sinha et al. 2019) makes the encoder output a mean μ and
    a log-variance; training decodes the reparameterised ``z = μ + σ·ε``; ``encode``
    returns μ either way."""

    def __init__(
        self,
        in_channels: int,
        grid: int,
        code_dim: int = 512,
        hidden: int = 64,
        variational: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.grid, self.hidden = in_channels, grid, hidden
        self.code_dim, self.variational = code_dim, variational
        flat = hidden * grid * grid
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(flat, 2 * code_dim if variational else code_dim),
        )
        self.decoder_fc = nn.Sequential(nn.Linear(code_dim, flat), nn.ReLU(inplace=True))
        self.decoder_conv = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, g, g]`` features → ``[B, code_dim]`` codes (μ when variational)."""
        return self.encoder(x)[:, : self.code_dim]

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of a variational encoder, each ``[B, code_dim]``."""
        out = self.encoder(x)
        return out[:, : self.code_dim], out[:, self.code_dim :]

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """``[B, code_dim]`` codes → ``[B, C, g, g]`` reconstructions."""
        h = self.decoder_fc(code).view(-1, self.hidden, self.grid, self.grid)
        return self.decoder_conv(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return self.decode(code), code


class CodeDiscriminator(nn.Module):
    """MLP ``code → logit`` of P(labelled | code)."""

    def __init__(self, code_dim: int = 512, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code).squeeze(-1)


@dataclass
class DiversityConfig:
    """Sizes and optimisation of the diversity models."""

    code_dim: int = 512
    hidden: int = 64
    epochs: int = 20
    disc_epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    adv_weight: float = 1.0
    #: β of VAAL's VAE loss ``MSE + β·KL`` (Sinha et al.'s code uses 1)
    kl_weight: float = 1.0


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def _labelled_bce(
    logits: torch.Tensor, is_labelled: torch.Tensor, pos_weight: float
) -> torch.Tensor:
    """BCE with labelled samples up-weighted so both classes weigh the same overall."""
    weight = torch.where(is_labelled > 0.5, pos_weight, 1.0)
    return F.binary_cross_entropy_with_logits(logits, is_labelled, weight=weight)


def _pos_weight(is_labelled: torch.Tensor) -> float:
    n_pos = float(is_labelled.sum())
    return (len(is_labelled) - n_pos) / max(n_pos, 1.0)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, σ²) ‖ N(0, 1))`` summed over the code, averaged over the batch:
    ``−½ · mean_b Σ_d (1 + log σ² − μ² − σ²)`` (Kingma & Welling; VAAL's VAE term)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()


def train_autoencoder(
    features: torch.Tensor,
    cfg: DiversityConfig,
    seed: int,
    device: torch.device | str = "cpu",
    is_labelled: torch.Tensor | None = None,
    variational: bool = False,
) -> tuple[FeatureAutoEncoder, CodeDiscriminator | None, list[float]]:
    """Train an auto-encoder on ``[N, C, g, g]`` features by MSE for ``cfg.epochs``.

    With ``is_labelled`` (``[N]`` 0/1) it is trained jointly with a discriminator, VAAL's
    game (Sinha et al. 2019, Sec. 3): D learns labelled (1) vs unlabelled (0) codes, the
    encoder adds ``adv_weight · BCE(D(code), 1)`` for every sample (it tries to make all
    codes look labelled). ``variational=True`` makes it VAAL's VAE: the decoder sees the
    reparameterised ``z = μ + σ·ε`` and the loss adds ``kl_weight · KL``; D sees μ.
    Returns (auto-encoder, discriminator or None, mean loss per epoch), in eval mode.
    """
    n, c, g, _ = features.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = FeatureAutoEncoder(c, g, cfg.code_dim, cfg.hidden, variational)
        disc = CodeDiscriminator(cfg.code_dim) if is_labelled is not None else None
    gen = torch.Generator().manual_seed(seed)
    ae.to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.lr)
    if disc is not None:
        assert is_labelled is not None
        disc.to(device).train()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
        target = is_labelled.float()
        pos_weight = _pos_weight(target)
    history: list[float] = []
    with torch.enable_grad():
        for _ in range(cfg.epochs):
            total = 0.0
            for idx in _batches(n, cfg.batch_size, gen):
                x = features[idx].to(device)
                if variational:
                    code, logvar = ae.posterior(x)
                    eps = torch.randn(code.shape, generator=gen).to(device)
                    recon = ae.decode(code + (0.5 * logvar).exp() * eps)
                    loss = F.mse_loss(recon, x) + cfg.kl_weight * gaussian_kl(code, logvar)
                else:
                    recon, code = ae(x)
                    loss = F.mse_loss(recon, x)
                if disc is not None:
                    fool = torch.ones(len(idx), device=device)
                    loss = loss + cfg.adv_weight * F.binary_cross_entropy_with_logits(
                        disc(code), fool
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if disc is not None:
                    y = target[idx].to(device)
                    d_loss = _labelled_bce(disc(code.detach()), y, pos_weight)
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / n)
    ae.eval()
    if disc is not None:
        disc.eval()
    return ae, disc, history


@torch.no_grad()
def encode_all(
    ae: FeatureAutoEncoder,
    features: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    folder: str | None = None,
) -> torch.Tensor:
    """Codes ``[N, code_dim]`` (CPU) of ``[N, C, g, g]`` features, in batches, written
    into one preallocated tensor (no per-batch list and concatenation copy), in memory
    or memory-mapped in ``folder`` (:func:`mtal.buffers.float32_buffer`)."""
    out = torch.from_numpy(float32_buffer((len(features), ae.code_dim), folder))
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        out[start : start + len(chunk)] = ae.encode(chunk.to(device)).cpu()
    return out


@torch.no_grad()
def labelled_probability(
    disc: CodeDiscriminator, codes: torch.Tensor, batch_size: int, device: torch.device | str
) -> torch.Tensor:
    """``D(x) = σ(logit)`` = P(labelled) of each code, ``[N]`` on CPU."""
    return torch.cat([torch.sigmoid(disc(c.to(device))).cpu() for c in codes.split(batch_size)])

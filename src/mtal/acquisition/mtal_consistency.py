"""MTAL (Hekimoglu et al., WACV 2024): task inconsistency × feature diversity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy, minmax
from mtal.acquisition.diversity import (
    DiversityConfig,
    FeatureAutoEncoder,
    encode_all,
    labelled_probability,
    pooled_task_features,
    standardise,
    train_autoencoder,
)
from mtal.acquisition.scoring import (
    accepts_keyword,
    forward,
    labelled_features,
    stream_summaries,
)

#: diversity(strategy, ctx, feats, n_labelled, channels, seed) -> [n_unlabelled]; ``feats``
#: is one standardised ``[n_labelled + n_unlabelled, ΣC_t, g, g]`` buffer, labelled rows
#: first (one copy of the pool's features, issue 16.6); ``channels`` the per-task counts
DiversityFn = Callable[
    ["MTALStrategy", AcquisitionContext, torch.Tensor, int, list[int], int], np.ndarray
]

#: queries per block of the streamed encode + nearest-code search: codes of at most this
#: many candidates, and faiss's distance block for them (≤ 1024 × 1024 floats), exist at once
QUERY_BLOCK = 1024


def accepts_refine(model: torch.nn.Module) -> bool:
    """Whether the network's ``forward`` declares ``refine`` (PAD-Net: ``refine=False``
    skips the distillation and final heads, whose output MTAL's initial anchor never reads)."""
    return accepts_keyword(getattr(model, "net", None) or model, "refine")


def _blockwise(rows: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> np.ndarray:
    """``fn`` applied to ``rows`` one :data:`QUERY_BLOCK` at a time, its ``[block]`` results
    written into one float64 array: nothing N-sized is built from the rows but the result."""
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), QUERY_BLOCK):
        block = rows[start : start + QUERY_BLOCK]
        out[start : start + len(block)] = np.asarray(fn(block)).reshape(-1)
    return out


def _nearest(queries: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
    """Distance of each query row to its nearest key row (exact float32 search), the
    queries taken in blocks so a strided view is never copied whole."""
    from mtal.search import nearest_distance

    k = np.ascontiguousarray(keys.flatten(1).numpy(), dtype=np.float32)
    return _blockwise(
        queries,
        lambda q: nearest_distance(np.ascontiguousarray(q.flatten(1).numpy(), np.float32), k),
    )


def _code_distance(
    ae: FeatureAutoEncoder,
    feats: torch.Tensor,
    n_lab: int,
    cfg: DiversityConfig,
    device: torch.device | str,
    folder: str | None = None,
) -> np.ndarray:
    """Eq. 3: ``min_{l∈L} ‖z(x) − z(l)‖₂`` for every unlabelled row of ``feats``; the
    candidates' codes are encoded and searched one :data:`QUERY_BLOCK` at a time, the
    labelled codes kept in memory or memory-mapped in ``folder``."""
    z_lab = encode_all(ae, feats[:n_lab], cfg.batch_size, device, folder)
    return _blockwise(
        feats[n_lab:], lambda rows: _nearest(encode_all(ae, rows, cfg.batch_size, device), z_lab)
    )


def _labelled_mask(n: int, n_lab: int) -> torch.Tensor:
    """``[n]`` 0/1 targets of the discriminator: the first ``n_lab`` rows are labelled."""
    is_lab = torch.zeros(n)
    is_lab[:n_lab] = 1.0
    return is_lab


def ae_distance(
    strat: MTALStrategy,
    ctx: AcquisitionContext,
    feats: torch.Tensor,
    n_lab: int,
    channels: list[int],
    seed: int,
) -> np.ndarray:
    """WACV24 Eq. 3: ``div(x) = min_{l∈L} ‖z(x) − z(l)‖₂`` with ``z`` the auto-encoder
    code, the AE trained on labelled + unlabelled features."""
    cfg = strat.diversity_config
    ae, _, hist = train_autoencoder(feats, cfg, seed, ctx.device)
    strat.last_diagnostics["ae_loss"] = hist
    return _code_distance(ae, feats, n_lab, cfg, ctx.device, ctx.summary_dir)


def maxst_distance(
    strat: MTALStrategy,
    ctx: AcquisitionContext,
    feats: torch.Tensor,
    n_lab: int,
    channels: list[int],
    seed: int,
) -> np.ndarray:
    """Max-ST: per task t, ``div_t(x)`` = distance of x's (standardised, pooled) task-t
    features to the nearest labelled image's; ``div(x) = max_t div_t(x)`` (no
    auto-encoder). ``maxst_normalise=True`` min–max normalises each ``div_t`` over the
    candidates before the max (ours; the paper has no such step, so it is off)."""
    per_task = []
    start = 0
    for c in channels:
        task = feats[:, start : start + c]
        per_task.append(_nearest(task[n_lab:], task[:n_lab]))
        start += c
    stacked = np.stack(per_task, axis=1)
    if strat.maxst_normalise:
        stacked = minmax(stacked, axis=0)
    return stacked.max(axis=1)


def vaal_score(
    strat: MTALStrategy,
    ctx: AcquisitionContext,
    feats: torch.Tensor,
    n_lab: int,
    channels: list[int],
    seed: int,
) -> np.ndarray:
    """VAAL (Sinha et al., ICCV 2019) on the same task features: a VAE (reparameterised
    code, ``MSE + kl_weight·KL``) and a discriminator on its mean code trained
    adversarially (the VAE adds ``adv_weight``·BCE(D(μ), labelled) for every sample);
    ``div(x) = 1 − D(μ(x))``, the discriminator's probability that x is unlabelled."""
    cfg = strat.diversity_config
    is_lab = _labelled_mask(len(feats), n_lab)
    vae, disc, hist = train_autoencoder(
        feats, cfg, seed, ctx.device, is_labelled=is_lab, variational=True
    )
    assert disc is not None
    strat.last_diagnostics["ae_loss"] = hist

    def unlabelled_probability(rows: torch.Tensor) -> np.ndarray:
        codes = encode_all(vae, rows, cfg.batch_size, ctx.device)
        return 1.0 - labelled_probability(disc, codes, cfg.batch_size, ctx.device).numpy()

    return _blockwise(feats[n_lab:], unlabelled_probability)


def ae_disc_score(
    strat: MTALStrategy,
    ctx: AcquisitionContext,
    feats: torch.Tensor,
    n_lab: int,
    channels: list[int],
    seed: int,
) -> np.ndarray:
    """ "Ours + L_D" (WACV24 Fig. 7b): the auto-encoder trained with the extra adversarial
    term of a jointly trained discriminator (reconstruction + ``adv_weight``·BCE(D(z), 1));
    ``div(x)`` is still Eq. 3, the distance of x's code to the nearest labelled code."""
    cfg = strat.diversity_config
    is_lab = _labelled_mask(len(feats), n_lab)
    ae, disc, hist = train_autoencoder(feats, cfg, seed, ctx.device, is_labelled=is_lab)
    assert disc is not None
    strat.last_diagnostics["ae_loss"] = hist
    return _code_distance(ae, feats, n_lab, cfg, ctx.device, ctx.summary_dir)


# --------------------------------------------------------------------------- sample weights

#: sample_weights(strategy, ctx, images, s_k) -> ``[n_selected, K]`` weights in [0, 1] or
#: None (the pool keeps 1.0); ``images`` the bought images in selection order, ``s_k``
#: their rows of the normalised inconsistency (None when the variant computes none)
SampleWeightFn = Callable[
    ["MTALStrategy", AcquisitionContext, np.ndarray, np.ndarray | None], np.ndarray | None
]


def minmax_weights(values: np.ndarray) -> np.ndarray:
    """Per-column (task) min–max normalisation to [0, 1] for *loss weights*: unlike
    :func:`mtal.acquisition.base.minmax` (constant column → 0, right for a ranking score),
    a constant column maps to 1.0, so a task whose samples cannot be told apart (or a
    single bought image) keeps full weight instead of being silently switched off."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    lo = values.min(axis=0, keepdims=True)
    span = values.max(axis=0, keepdims=True) - lo
    return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 1.0)


def bought_task_losses(ctx: AcquisitionContext, images: np.ndarray) -> np.ndarray:
    """True per-sample task losses ``L_k(ŷ_k(x), y_k)`` → ``[n, K]`` (float64, rows follow
    ``images``) of the current model's final predictions against the labels just bought.

    The labels are read through the datamodule, which only loads what its pool marks as
    labelled: a copy of ``ctx.pool`` with ``images`` labelled (at ``ctx.cycle + 1``, the
    cycle they are bought for) is attached for the pass and the datamodule's own pool is
    re-attached afterwards, whatever happens; ``ctx.pool`` is never modified. Only the
    ``[B, K]`` losses outlive each batch.
    """
    images = np.asarray(images, dtype=np.int64).reshape(-1)
    names = list(ctx.tasks)
    if images.size == 0:
        return np.zeros((0, len(names)), np.float64)
    dm = ctx.datamodule
    if not (hasattr(dm, "attach_pool") and hasattr(dm, "pool")):
        raise TypeError(
            f"mtal: sample_weights='loss' reads the bought labels through the datamodule, but "
            f"{type(dm).__name__} has no pool/attach_pool; use mtal.data.ActiveDataModule "
            "or choose sample_weights='inconsistency' or 'none'"
        )
    bought = ctx.pool.copy()
    bought.label_images(images, cycle=int(ctx.cycle) + 1)

    def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labelled = torch.as_tensor(batch["labelled"]).to(torch.bool)
        if not bool(labelled.all()):
            raise RuntimeError(
                "mtal: sample_weights='loss': the datamodule's pool_loader(with_labels=True) "
                "did not deliver every bought label; it must load the attached pool's labels"
            )
        out = forward(ctx, batch)
        cols = [task.loss(out.final[n], batch["targets"][n]) for n, task in ctx.tasks.items()]
        return {"loss": torch.stack([c.reshape(-1) for c in cols], dim=1)}

    original = dm.pool
    dm.attach_pool(bought)
    try:
        got = stream_summaries(ctx, images, summarise, with_labels=True)
    finally:
        dm.attach_pool(original)
    losses = got["loss"].numpy().astype(np.float64)
    if not np.isfinite(losses).all():
        bad = sorted({int(images[r]) for r in np.argwhere(~np.isfinite(losses))[:, 0]})
        raise FloatingPointError(
            f"mtal: sample_weights='loss': non-finite task loss for pool images {bad[:5]}; "
            "check the model outputs and the labels of those images"
        )
    return losses


def inconsistency_weights(
    strat: MTALStrategy, ctx: AcquisitionContext, images: np.ndarray, s_k: np.ndarray | None
) -> np.ndarray | None:
    """WACV24's weights: the bought images' ``s_k`` (min–max over the scored pool; a task
    whose ``ŝ_k`` is constant over the pool → 1.0); None for ``variant='diversity'``."""
    return None if s_k is None else np.asarray(s_k, dtype=np.float64)


def no_weights(
    strat: MTALStrategy, ctx: AcquisitionContext, images: np.ndarray, s_k: np.ndarray | None
) -> np.ndarray | None:
    """No sample weighting: the pool keeps weight 1.0 for every bought label."""
    return None


def loss_weights(
    strat: MTALStrategy, ctx: AcquisitionContext, images: np.ndarray, s_k: np.ndarray | None
) -> np.ndarray | None:
    """Tab. 1's "loss" row: the *true* task loss of the bought images (their labels come
    with the purchase), min–max normalised per task over the bought images, a constant
    column → 1.0. Inconsistency ``s_k`` is the label-free estimate of this loss; this row
    uses the real one (an oracle: it needs the labels at acquisition time, which holds in
    simulation, not for a request sent to annotators with ``mtal acquire``)."""
    raw = bought_task_losses(ctx, images)
    strat.last_diagnostics["raw_loss_range"] = [raw.min(axis=0).tolist(), raw.max(axis=0).tolist()]
    return minmax_weights(raw)


def member_discrepancies(
    task: Any, anchor: torch.Tensor, members: list[torch.Tensor]
) -> torch.Tensor:
    """``[M, B]`` discrepancies of the anchor against each member: ``Task.discrepancies``
    (anchor side computed once) or, for a duck-typed task without it, one call each."""
    many = getattr(task, "discrepancies", None)
    if many is not None:
        return many(anchor, members)
    return torch.stack([task.discrepancy(anchor, raw) for raw in members], dim=0)


#: ``sample_weights`` option -> weighting function (WACV24 Tab. 1 rows)
SAMPLE_WEIGHTS: dict[str, SampleWeightFn] = {
    "inconsistency": inconsistency_weights,
    "none": no_weights,
    "loss": loss_weights,
}


#: what ŷ_k of Eq. 1 is: "initial" (WACV24) or "final" (the refined output)
ANCHORS = ("initial", "final")

#: variant -> (uses inconsistency, diversity function or None)
VARIANTS: dict[str, tuple[bool, DiversityFn | None]] = {
    "full": (True, ae_distance),
    "inconsistency": (True, None),
    "diversity": (False, ae_distance),
    "maxst": (True, maxst_distance),
    "vaal": (True, vaal_score),
    "ae_disc": (True, ae_disc_score),
}


@STRATEGIES.register("mtal")
class MTALStrategy(Strategy):
    """Task-consistency × diversity selection of whole images.

    - inconsistency (WACV24 Eq. 1) ``ŝ_k(x) = max_{j≠k} L_k(ŷ_k(x), ŷ_kj(x))``:
      ``ŷ_kj`` the committee members of task k (``committee`` 1/2/3 = pairs, + triplets,
      + quadruples: C5/C11/C15), ``L_k = Task.discrepancy(ŷ_k, ŷ_kj)`` (the member is
      turned into the target; see the task's ``discrepancy_target``); ``anchor``:
      ``"initial"`` (default, the paper's: ``ŷ_k`` is the initial prediction) or
      ``"final"`` (the refined PAD-Net output; then ``include_initial=True`` also puts the
      initial prediction among the members); ``committee_mode``: ``"learnable"``
      (default, the paper's extra two-task MMD blocks) or ``"shared"`` (partial sums of
      the main network's own SA messages), passed to the model;
    - ``s_k = (ŝ_k − min ŝ_k) / (max ŝ_k − min ŝ_k)`` over the scored candidates (Eq. 2;
      0 when constant, so the task does not rank);
    - ``div(x)`` = distance of x's auto-encoder code to the nearest labelled code; the AE
      is trained at every select on the pooled (``feature_pool``²), standardised,
      concatenated task features of labelled + unlabelled images; ``div = 1`` when
      nothing is labelled;
    - ``s(x) = div(x) · max_k s_k(x)``; buy the top ``budget // K``.

    ``variant``: ``full``; ``inconsistency`` (``max_k s_k``); ``diversity`` (``div``, no
    ``s_k``); ``maxst``, ``vaal``, ``ae_disc`` replace ``div`` (see those functions).

    ``sample_weights`` (WACV24 Tab. 1), the per-sample, per-task loss weights stored in
    the pool for the bought images (training uses ``Σ_k s_k·w_k·L_k(ŷ_k, y_k)``, Eq. 5,
    on the final prediction only; see :data:`SAMPLE_WEIGHTS`): ``inconsistency`` (their
    ``s_k``, the paper's; a task whose ``ŝ_k`` is constant over the scored pool carries
    no information and gets weight 1.0 on every bought image, not 0 — our rule, the
    paper is silent; None for
    ``variant='diversity'``), ``none`` (1.0), ``loss`` (their true task loss against the
    bought labels, min–max per task over the bought images, constant → 1.0).
    Constants: ``code_dim=512`` is the paper's; ``feature_pool``, ``ae_hidden``,
    ``ae_epochs``, ``disc_epochs``, ``ae_batch_size``, ``ae_lr``, ``adv_weight`` and
    ``kl_weight`` are ours (the paper does not fix them; VAAL's β = 1 and adversarial
    weight 1 are Sinha et al.'s). ``maxst_normalise`` (off) is an extra step of ours.

    ``weight_floor`` f maps a weight w to ``f + (1 − f)·w``: with the paper's min–max
    (f = 0, the default) the least inconsistent / lowest-loss bought image gets weight 0
    for that task, i.e. its label is bought but not trained on; f > 0 keeps every label
    in the loss.
    """

    name = "mtal"
    granularity = "image"

    def __init__(
        self,
        variant: str = "full",
        committee: int = 1,
        anchor: str = "initial",
        committee_mode: str = "learnable",
        include_initial: bool = False,
        feature_pool: int = 4,
        code_dim: int = 512,
        ae_hidden: int = 64,
        ae_epochs: int = 20,
        disc_epochs: int = 20,
        ae_batch_size: int = 64,
        ae_lr: float = 1e-3,
        adv_weight: float = 1.0,
        kl_weight: float = 1.0,
        maxst_normalise: bool = False,
        sample_weights: str = "inconsistency",
        weight_floor: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"mtal: variant={variant!r}; expected one of {sorted(VARIANTS)}")
        if sample_weights not in SAMPLE_WEIGHTS:
            raise ValueError(
                f"mtal: sample_weights={sample_weights!r}; expected one of "
                f"{sorted(SAMPLE_WEIGHTS)} (loop.strategy_kwargs.sample_weights)"
            )
        if not 0.0 <= float(weight_floor) <= 1.0:
            raise ValueError(
                f"mtal: weight_floor={weight_floor}; expected a value in [0, 1] "
                "(weight = floor + (1 − floor)·normalised)"
            )
        if committee not in (1, 2, 3):
            raise ValueError(
                f"mtal: committee={committee}; expected 1 (pairs, C5), 2 (+triplets, C11) "
                "or 3 (+quadruples, C15)"
            )
        if feature_pool < 1:
            raise ValueError(f"mtal: feature_pool must be >= 1, got {feature_pool}")
        if anchor not in ANCHORS:
            raise ValueError(
                f"mtal: anchor={anchor!r}; expected one of {ANCHORS} "
                "(loop.strategy_kwargs.anchor; 'initial' is WACV24 Eq. 1)"
            )
        if committee_mode not in ("learnable", "shared"):
            raise ValueError(
                f"mtal: committee_mode={committee_mode!r}; expected 'learnable' (WACV24 Sec. "
                "3.2) or 'shared' (loop.strategy_kwargs.committee_mode)"
            )
        if include_initial and anchor == "initial":
            raise ValueError(
                "mtal: include_initial=True compares the initial prediction with itself when "
                "anchor='initial'; use it only with anchor='final'"
            )
        self.anchor = anchor
        self.committee_mode = committee_mode
        self.variant = variant
        self.committee = committee
        self.include_initial = include_initial
        self.feature_pool = feature_pool
        self.sample_weights = sample_weights
        self.weight_floor = float(weight_floor)
        self.diversity_config = DiversityConfig(
            code_dim=code_dim,
            hidden=ae_hidden,
            epochs=ae_epochs,
            disc_epochs=disc_epochs,
            batch_size=ae_batch_size,
            lr=ae_lr,
            adv_weight=adv_weight,
            kl_weight=kl_weight,
        )
        self.maxst_normalise = bool(maxst_normalise)
        self.last_diagnostics: dict[str, Any] = {}

    def check_model(self, model: Any) -> None:
        """A learnable committee must have been built into the network (PAD-Net
        ``committee_mode: learnable``, ``committee_order`` ≥ ``committee``)."""
        net = getattr(model, "net", None) or model
        if self.variant == "diversity" or not hasattr(net, "learnable_committee"):
            return
        if self.committee_mode == "learnable" and net.learnable_committee is None:
            raise ValueError(
                "strategy mtal scores with committee_mode='learnable' (WACV24), but the network "
                "was built without learnable committee blocks: set "
                "model.model_kwargs.committee_mode: learnable, or "
                "loop.strategy_kwargs.committee_mode: shared"
            )
        order = int(getattr(net, "committee_order", self.committee))
        if self.committee_mode == "learnable" and self.committee > order:
            raise ValueError(
                f"strategy mtal asks committee={self.committee}, but the network's learnable "
                f"committee has committee_order={order}: set "
                f"model.model_kwargs.committee_order: {self.committee}"
            )

    def inconsistency(self, ctx: AcquisitionContext, out: Any) -> torch.Tensor:
        """Raw ``ŝ_k`` of a batch → ``[B, K]`` from a committee forward's output."""
        if out.committee is None:
            raise ValueError("mtal: the model returned no committee; it must support committee>0")
        if self.anchor == "initial" and out.initial is None:
            raise ValueError(
                "mtal: anchor='initial' needs the model's initial predictions (PAD-Net); this "
                "model returns none — use model padnet or anchor: final"
            )
        cols = []
        for name, task in ctx.tasks.items():
            members = {
                m: raw
                for m, raw in out.committee[name].items()
                if m != "initial" or (self.include_initial and self.anchor == "final")
            }
            if not members:
                raise ValueError(f"mtal: the committee of task {name!r} has no members")
            ref = out.initial[name] if self.anchor == "initial" else out.final[name]
            d = member_discrepancies(task, ref, list(members.values()))
            cols.append(d.max(dim=0).values)
        return torch.stack(cols, dim=1)

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        use_incons, diversity = VARIANTS[self.variant]
        names = list(ctx.tasks)
        grid = self.feature_pool
        channels: list[int] = []
        self.last_diagnostics = {"variant": self.variant, "sample_weights": self.sample_weights}

        def features_of(out: Any) -> torch.Tensor:
            if out.task_features is None:
                raise ValueError("mtal: the model returned no task_features")
            if not channels:
                channels.extend(int(out.task_features[n].shape[1]) for n in names)
            return pooled_task_features(out.task_features, names, grid)

        # the refined PAD-Net output is read only by anchor='final' (nothing else of the
        # select uses `final`): skip the distillation and final heads otherwise
        skip = {"refine": False} if accepts_refine(ctx.model) else {}
        unl_skip = skip if not use_incons or self.anchor == "initial" else {}

        def summarise_unl(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            if use_incons:
                out = forward(
                    ctx,
                    batch,
                    committee=self.committee,
                    committee_mode=self.committee_mode,
                    **unl_skip,
                )
            else:
                out = forward(ctx, batch, **unl_skip)
            res = {}
            if use_incons:
                res["incons"] = self.inconsistency(ctx, out)
            if diversity is not None:
                res["feat"] = features_of(out)
            return res

        def summarise_lab(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            return {"feat": features_of(forward(ctx, batch, **skip))}

        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        lab = np.asarray(ctx.pool.labelled_images(), dtype=np.int64)
        # labelled features first: the unlabelled pass then writes its rows behind them in
        # one [labelled; unlabelled] buffer, one copy of the pool's features (issue 16.6)
        lead: dict[str, torch.Tensor] = {}
        if diversity is not None and len(lab):
            lead["feat"] = labelled_features(ctx, lab, summarise_lab, "feat")
        got = stream_summaries(ctx, unl, summarise_unl, lead=lead)
        lead.clear()  # the labelled rows live on at the head of got["feat"]
        score = np.ones(len(unl))
        s_k = s_w = None
        if use_incons:
            raw = got["incons"].numpy().astype(np.float64)
            s_k = minmax(raw, axis=0)
            s_w = minmax_weights(raw)  # as s_k, but a constant task keeps weight 1.0
            score = score * s_k.max(axis=1)
            self.last_diagnostics["raw_inconsistency_range"] = [
                raw.min(axis=0).tolist(),
                raw.max(axis=0).tolist(),
            ]
        if diversity is not None:
            div = np.ones(len(unl))
            if len(lab):
                feats = got.pop("feat")
                feats = standardise(feats.view(len(feats), -1, grid, grid), inplace=True)
                seed = int(rng.integers(2**31 - 2))
                div = diversity(self, ctx, feats, len(lab), channels, seed)
                del feats
            score = score * div
            self.last_diagnostics["diversity_range"] = [float(div.min()), float(div.max())]
        sel = self.image_selection(ctx, unl, score, count, rng, task_scores=s_k, weights=s_w)
        weights = SAMPLE_WEIGHTS[self.sample_weights](self, ctx, sel.images, sel.weights)
        if weights is not None:
            weights = self.weight_floor + (1.0 - self.weight_floor) * np.asarray(weights)
            sel.weights = np.asarray(weights, dtype=np.float32).reshape(len(sel.images), -1)
        else:
            sel.weights = None
        sel.diagnostics.update(self.last_diagnostics)
        return sel

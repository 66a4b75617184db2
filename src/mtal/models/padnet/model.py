"""PAD-Net with the pairwise committee (Hekimoglu et al., WACV 2024) and ground-truth
substitution (PartAL, Durasov et al.)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models import MODELS
from mtal.models.base import MultiTaskNet
from mtal.models.heads import ConvHead
from mtal.models.padnet.committee import COMMITTEE_MODES, build_committee
from mtal.models.padnet.distillation import (
    MultiModalDistillation,
    committee_partner_sets,
    member_name,
)
from mtal.types import MultiTaskOutput

if TYPE_CHECKING:
    from mtal.tasks.base import Task

#: How the re-embedded (activated) initial prediction enters the distillation input:
#: "add": M_t = F_t + embed_t(p_t); "replace": M_t = embed_t(p_t).
GT_EMBED_MODES = ("add", "replace")


#: which heads' dropout an MC-dropout forward samples (``forward(mc_scope=...)``)
MC_SCOPES = ("all", "final")


def _repeat(x: Tensor, reps: int) -> Tensor:
    """``x`` stacked ``reps`` times on the batch axis (sample-major), or ``x`` itself."""
    return x if reps == 1 else x.repeat(reps, *([1] * (x.dim() - 1)))


@MODELS.register("padnet")
class PADNet(MultiTaskNet):
    """PAD-Net: shared encoder → per-task initial branch (features F_t, deep-supervised
    initial prediction) → multi-modal distillation ``F_t + Σ_{a≠t} SA_{t,a}(F_a)`` → final
    head per task.

    ``gt_substitution=True`` (PartAL) adds, per task, ``embed_t`` (conv3x3 + ReLU, no
    BatchNorm so samples never mix) mapping the activated initial prediction p_t back to
    feature space; the distillation input becomes ``M_t = F_t + embed_t(p_t)``
    (``gt_embed="add"``) or ``M_t = embed_t(p_t)`` (``"replace"``). Since PAD-Net distils
    features, not predictions, this is what makes "use the ground truth instead of the
    initial prediction" well defined: for a sample that carries task t's label,
    ``p_t = encode_target(gt_t)`` (area-resized to the working resolution). Without it,
    ``M_t = F_t`` exactly as in PAD-Net.

    Committee (WACV24 Sec. 3.2), ``committee_mode``: ``"learnable"`` (default, the paper's)
    builds extra MMD blocks and heads per task and partner set of up to
    ``committee_order`` partners (:class:`~mtal.models.padnet.committee.LearnableCommittee`),
    trained by the module with task k's loss, fed detached inputs unless
    ``committee_detach=False`` (``committee_batched=True``: members computed with stacked
    kernels in eval mode, same numbers); ``"shared"`` forms the members from the main network's own
    SA messages (partial sums) through its final heads (no extra parameters).
    ``forward(committee=c)`` returns ``"initial"`` plus the members of up to c partners.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        backbone: str = "resnet18",
        pretrained: bool = False,
        head_channels: int = 64,
        dropout: float = 0.1,
        loss_prediction: bool = False,
        *,
        encoder_channels: int = 128,
        backbone_kwargs: Mapping[str, Any] | None = None,
        loss_pred_hidden: int = 128,
        initial_convs: int = 2,
        final_convs: int = 2,
        gt_substitution: bool = False,
        gt_embed: str = "add",
        committee_mode: str = "learnable",
        committee_order: int = 1,
        committee_detach: bool = True,
        committee_dropout: float = 0.0,
        committee_batched: bool = False,
    ) -> None:
        super().__init__(
            tasks,
            backbone,
            pretrained,
            loss_prediction,
            encoder_channels,
            backbone_kwargs,
            loss_pred_hidden,
        )
        if gt_embed not in GT_EMBED_MODES:
            raise ValueError(f"padnet gt_embed must be one of {GT_EMBED_MODES}, got {gt_embed!r}")
        hc = head_channels
        self.initial_heads = nn.ModuleDict(
            {
                n: ConvHead(encoder_channels, hc, t.out_channels, initial_convs, dropout)
                for n, t in self.tasks.items()
            }
        )
        self.distillation = MultiModalDistillation(self.task_names, hc)
        self.final_heads = nn.ModuleDict(
            {
                n: ConvHead(hc, hc, t.out_channels, final_convs, dropout)
                for n, t in self.tasks.items()
            }
        )
        self.gt_substitution = gt_substitution
        self.gt_embed = gt_embed
        self.embed = (
            nn.ModuleDict(
                {
                    n: nn.Sequential(nn.Conv2d(t.out_channels, hc, 3, padding=1), nn.ReLU())
                    for n, t in self.tasks.items()
                }
            )
            if gt_substitution
            else None
        )
        self.committee_mode = committee_mode
        self.committee_order = int(committee_order)
        self.learnable_committee = build_committee(
            committee_mode,
            self.task_names,
            hc,
            {n: t.out_channels for n, t in self.tasks.items()},
            order=self.committee_order,
            num_convs=final_convs,
            dropout=committee_dropout,
            detach=committee_detach,
            batched=committee_batched,
        )

    @property
    def trains_committee(self) -> bool:
        """True when the committee has its own parameters the module must train."""
        return self.learnable_committee is not None

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        image: Tensor,
        *,
        committee: int = 0,
        gt: dict[str, Tensor] | None = None,
        gt_mask: Tensor | None = None,
        mc_dropout: bool = False,
        mc_samples: int = 1,
        mc_scope: str = "all",
        committee_mode: str | None = None,
        refine: bool = True,
    ) -> MultiTaskOutput:
        """Raw ``final``/``initial`` predictions at input size; ``committee>=1`` also returns
        the committee (members of up to ``committee`` partners); ``gt``/``gt_mask`` (B×K
        bool, task order) substitute ground truth; ``mc_dropout`` keeps head dropout on.
        ``mc_samples=S`` (with ``mc_dropout``): ``final``/``initial`` hold S dropout samples
        per image (S·B rows, sample-major, the masks of ``image.repeat(S)``); the encoder and
        every part before the first dropout run once (B rows). ``committee_mode`` overrides
        the built mode for this call ("shared" always works, "learnable" needs the learnable
        blocks). ``refine=False`` skips the distillation and final heads (``final`` is then
        empty), for callers that read only ``initial``/``task_features``/``committee`` (MTAL
        scoring with WACV24's initial anchor); every other output is unchanged.
        ``mc_scope`` (with ``mc_dropout``): ``"all"`` samples every head's dropout;
        ``"final"`` keeps the initial heads deterministic (``initial`` then has B rows), so
        with ground-truth substitution the distillation runs once and only the final heads'
        dropout tails are sampled (last-layer MC dropout, a different estimator)."""
        self._check_image(image)
        learnable = self._use_learnable(committee_mode)
        self._check_committee(committee, learnable)
        samples = self._check_mc_samples(mc_samples, mc_dropout, committee)
        if mc_scope not in MC_SCOPES:
            raise ValueError(f"padnet mc_scope must be one of {MC_SCOPES}, got {mc_scope!r}")
        initial_mc = mc_dropout and mc_scope == "all"
        size = image.shape[-2:]
        batch = image.shape[0]
        enc = self.encoder(image)
        feats: dict[str, Tensor] = {}
        initial_low: dict[str, Tensor] = {}
        for name in self.task_names:
            feats[name], initial_low[name] = self.run_head(
                self.initial_heads[name], enc.fused, initial_mc, samples if initial_mc else 1
            )
        inputs = self._distillation_inputs(feats, initial_low, gt, gt_mask, size)
        shared = bool(committee) and not learnable
        messages = self.distillation.messages(inputs) if refine or shared else {}
        final = {}
        for name in self.task_names if refine else ():
            others = [a for a in self.task_names if a != name]
            refined = self.distillation.refine(inputs, messages, name, others)
            # refined has B rows (inputs deterministic) or S·B (gt substitution samples them)
            rep = samples * batch // refined.shape[0]
            raw = self.run_head(self.final_heads[name], refined, mc_dropout, rep)[1]
            final[name] = self.upsample(raw, size)
        initial = {n: self.upsample(x, size) for n, x in initial_low.items()}
        members = None
        if committee and learnable:
            assert self.learnable_committee is not None
            learned = self.learnable_committee(inputs, committee, size)
            members = {k: {"initial": initial[k], **ms} for k, ms in learned.items()}
        elif committee:
            members = self._committee(inputs, messages, initial, committee, mc_dropout, size)
        return MultiTaskOutput(
            final=final,
            initial=initial,
            task_features=feats,
            committee=members,
            embedding=enc.embedding,
            loss_pred=self.predict_losses(enc),
            extras={"fused": enc.fused},  # the pre-head map (Core-Set, WACV24 Sec. 4.2)
        )

    # -- pieces ---------------------------------------------------------------------------
    def _use_learnable(self, mode: str | None) -> bool:
        if mode is None:
            return self.learnable_committee is not None
        if mode not in COMMITTEE_MODES:
            raise ValueError(
                f"padnet committee_mode must be one of {COMMITTEE_MODES}, got {mode!r}"
            )
        if mode == "learnable" and self.learnable_committee is None:
            raise ValueError(
                "padnet: committee_mode='learnable' was asked, but this network was built with "
                f"committee_mode={self.committee_mode!r} (no learnable blocks); build it with "
                "model.model_kwargs.committee_mode: learnable, or score with committee_mode: shared"
            )
        return mode == "learnable"

    def _check_committee(self, committee: int, learnable: bool) -> None:
        k = len(self.task_names)
        if not 0 <= committee <= k - 1:
            raise ValueError(
                f"padnet committee must be between 0 and K-1={k - 1} for tasks "
                f"{self.task_names} (1 pairs, 2 adds triplets, 3 quadruples); got {committee}"
            )
        if learnable and committee > self.committee_order:
            raise ValueError(
                f"padnet: the learnable committee was built with committee_order="
                f"{self.committee_order}, asked for committee={committee}; set "
                f"model.model_kwargs.committee_order: {committee} (or committee_mode: shared)"
            )

    def _committee(
        self,
        inputs: Mapping[str, Tensor],
        messages: Mapping[tuple[str, str], Tensor],
        initial: Mapping[str, Tensor],
        committee: int,
        mc_dropout: bool,
        size: Any,
    ) -> dict[str, dict[str, Tensor]]:
        """Members ŷ_{k,S} = head_k(M_k + Σ_{a∈S} SA_{k,a}(M_a)) for every partner set S,
        plus "initial"; messages are the ones of the main pass (no recomputation)."""
        out: dict[str, dict[str, Tensor]] = {}
        for k in self.task_names:
            members = {"initial": initial[k]}
            sets = committee_partner_sets(self.task_names, k, committee)
            refined = [self.distillation.refine(inputs, messages, k, p) for p in sets]
            batch = refined[0].shape[0]
            # all members of task k through its head in one call (stacked on the batch
            # axis): the same per-sample result in eval mode, far fewer small convolutions
            raw = self.upsample(self.final_heads[k](torch.cat(refined), mc_dropout)[1], size)
            for partners, member in zip(sets, raw.split(batch)):
                members[member_name(partners)] = member
            out[k] = members
        return out

    def _distillation_inputs(
        self,
        feats: Mapping[str, Tensor],
        initial_low: Mapping[str, Tensor],
        gt: Mapping[str, Tensor] | None,
        gt_mask: Tensor | None,
        size: Any,
    ) -> dict[str, Tensor]:
        """M_t per task: F_t, or (gt_substitution) F_t + embed_t(p_t) / embed_t(p_t), with p_t
        the activated initial prediction or, where gt_mask is set, the encoded ground truth."""
        if self.embed is None:
            if gt is not None or gt_mask is not None:
                raise ValueError(
                    "padnet got gt/gt_mask but was built without ground-truth substitution; "
                    "set `gt_substitution: true` in the model config"
                )
            return dict(feats)
        mask = self._check_gt(gt, gt_mask, next(iter(feats.values())).shape[0])
        inputs = {}
        for k, name in enumerate(self.task_names):
            task = self.tasks[name]
            pred = task.activate(initial_low[name])
            # MC samples (S·B rows) of the initial prediction: feature/gt rows repeat S times
            reps = pred.shape[0] // feats[name].shape[0]
            if mask is not None and bool(mask[:, k].any()):
                enc = task.encode_target(gt[name]).to(pred.dtype)  # type: ignore[index]
                if tuple(enc.shape[-2:]) != tuple(size):
                    raise ValueError(
                        f"gt[{name!r}] has spatial size {tuple(enc.shape[-2:])}; expected the "
                        f"input image size {tuple(size)}"
                    )
                enc = _repeat(F.adaptive_avg_pool2d(enc, pred.shape[-2:]), reps)
                pred = torch.where(_repeat(mask[:, k], reps).view(-1, 1, 1, 1), enc, pred)
            emb = self.embed[name](pred)
            inputs[name] = _repeat(feats[name], reps) + emb if self.gt_embed == "add" else emb
        return inputs

    def _check_gt(
        self, gt: Mapping[str, Tensor] | None, gt_mask: Tensor | None, batch: int
    ) -> Tensor | None:
        if gt is None and gt_mask is None:
            return None
        if gt is None or gt_mask is None:
            raise ValueError("padnet ground-truth substitution needs both `gt` and `gt_mask`")
        k = len(self.task_names)
        if gt_mask.dtype != torch.bool or tuple(gt_mask.shape) != (batch, k):
            raise ValueError(
                f"gt_mask must be a bool tensor of shape B×K=({batch}, {k}) in task order "
                f"{self.task_names}; got {gt_mask.dtype} {tuple(gt_mask.shape)}"
            )
        missing = [
            n for i, n in enumerate(self.task_names) if bool(gt_mask[:, i].any()) and n not in gt
        ]
        if missing:
            raise ValueError(
                f"gt_mask marks tasks {missing} as labelled but `gt` has no entry for them"
            )
        return gt_mask

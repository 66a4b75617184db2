"""``MultiTaskModule``: the LightningModule that trains any mtal multi-task network.

Per step it computes per-sample, per-task losses ``L[B,K]``, reduces them per task as
``L_k = Σ_b labelled·s·L / max(Σ_b labelled, 1)`` (``s`` = the pool's sample weight),
combines the tasks with a loss-weighting scheme (``mtal.training.weighting``) and,
with LL4AL, adds the loss-prediction ranking loss. GradNorm switches the module to
manual optimisation. Validation/test log per-task losses, the tasks' metrics and the
headline multi-task loss ``val/mtl_loss`` (papers' fixed weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from mtal.training.optim import OPTIMIZERS, SCHEDULES, create_optimizer, schedule_lambda
from mtal.training.partial import (
    PARTIAL_SUPERVISION,
    SL_REDUCTIONS,
    create_partial_supervision,
)
from mtal.training.weighting import WEIGHTINGS, LossWeighting, create_weighting
from mtal.types import MultiTaskOutput

#: weighting name → the constructor argument that receives ``task_weights``
#: (schemes not listed have no fixed per-task weights).
FIXED_WEIGHTS_ARGUMENT: dict[str, str] = {"fixed": "weights", "dwa": "base_weights"}

#: stages evaluated by ``_eval_step`` (keys of the metric ModuleDicts)
EVAL_STAGES = ("val", "test")


def build_tasks(
    names: Sequence[str],
    num_classes: Mapping[str, int] | None = None,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Ordered name → Task via ``mtal.tasks.create_task`` (imported on first use)."""
    from mtal.tasks import create_task

    num_classes = dict(num_classes or {})
    task_options = dict(task_options or {})
    unknown = [t for t in task_options if t not in names]
    if unknown:
        raise ValueError(f"task_options names task(s) {unknown} not in tasks={list(names)}")
    return {
        t: create_task(t, num_classes=num_classes.get(t), **dict(task_options.get(t, {})))
        for t in names
    }


def build_model(name: str, tasks: Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """The network via ``mtal.models.create_model`` (imported on first use)."""
    from mtal.models import create_model

    return create_model(name, tasks=tasks, **kwargs)


def reduce_task_losses(
    per_sample: Tensor, labelled: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Per-task loss K-vector ``Σ_b labelled·s·L / max(Σ_b labelled, 1)`` from ``B×K`` inputs.

    Entries with ``labelled=False`` or ``s=0`` are removed with ``torch.where`` so they
    contribute exactly 0 to the value and to the gradient (even if ``L`` is NaN there).
    """
    mask = labelled.to(torch.bool)
    w = mask.to(per_sample.dtype)
    if weight is not None:
        w = torch.where(mask, weight.to(per_sample.dtype), per_sample.new_zeros(()))
    contrib = torch.where(w != 0, w * per_sample, per_sample.new_zeros(()))
    return contrib.sum(0) / mask.sum(0).clamp_min(1).to(per_sample.dtype)


def masked_ranking_loss(
    pred: Tensor, target: Tensor, labelled: Tensor, margin: float = 1.0
) -> Tensor:
    """LL4AL ranking loss summed over tasks; per task only samples with the task labelled
    are paired (i with n−1−i among them); a task with < 2 labelled samples adds 0."""
    from mtal.models.ll4al import ll4al_ranking_loss

    total = pred.new_zeros(())
    for k in range(pred.shape[1]):
        idx = labelled[:, k].nonzero().squeeze(1)
        if idx.numel() >= 2:
            total = total + ll4al_ranking_loss(pred[idx, k], target[idx, k].detach(), margin)
    return total


def _fmt_losses(names: Sequence[str], values: Tensor) -> str:
    return ", ".join(f"{t}={v:.6g}" for t, v in zip(names, values.detach().cpu().tolist()))


class MultiTaskModule(L.LightningModule):
    """Trains a multi-task network with per-sample weights, a loss-weighting scheme,
    optional PAD-Net deep supervision and optional LL4AL loss prediction.

    Arguments are plain typed values (LightningCLI-friendly). ``tasks=None`` takes the
    tasks (and ``num_classes``) from the trainer's datamodule at ``setup``.
    ``task_weights`` are the fixed weights of ``fixed`` and the base weights of ``dwa``;
    ``loss_weights_for_metric`` weights the headline ``val/mtl_loss`` (default:
    ``task_weights``, else 1). ``init_from`` loads only the network weights of a
    checkpoint at ``setup`` (continuous training; optimiser, schedule and weighting state
    start fresh). ``gradnorm_layer`` names the shared layer GradNorm measures (default:
    last Conv/Linear of ``net.encoder``/``net.backbone``); ``weighting_lr`` is the
    learning rate of learnable weighting parameters (default ``lr``). GradNorm runs in
    manual optimisation, so Trainer gradient clipping/accumulation do not apply to it.
    ``sl_normalisation`` picks the supervised reduction (``per_task``, or MTPSL's Eq. 1
    ``per_image``); ``partial_supervision`` (``none | ssl | mtpsl``, with
    ``partial_kwargs``) adds a term for the unlabelled tasks of partially labelled
    images (:mod:`mtal.training.partial`).

    A network with a learnable committee (PAD-Net ``committee_mode: learnable``) is run
    with ``committee=<its order>`` in training and :meth:`committee_loss` is added to the
    total (logged as ``train/committee_loss``; ``train/loss`` includes it). With detached
    committee inputs the main network's gradients are exactly those of a run without it
    (norm-based gradient clipping, which sees every parameter, is the one exception).
    ``train_gt_substitution`` (PartAL, ours to expose; default off) passes the batch's
    labels as ``gt``/``gt_mask`` to the network in training.
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        num_classes: dict[str, int] | None = None,
        task_options: dict[str, dict] | None = None,
        model: str = "padnet",
        backbone: str = "tiny_cnn",
        pretrained: bool = False,
        model_kwargs: dict | None = None,
        weighting: str = "fixed",
        task_weights: dict[str, float] | None = None,
        weighting_kwargs: dict | None = None,
        loss_weights_for_metric: dict[str, float] | None = None,
        use_sample_weights: bool = True,
        deep_supervision: float = 1.0,
        optimizer: str = "adam",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: str = "poly",
        poly_power: float = 0.9,
        weighting_lr: float | None = None,
        loss_prediction: bool = False,
        ll4al_weight: float = 1.0,
        ll4al_margin: float = 1.0,
        ll4al_detach_epoch: int | None = None,
        gradnorm_layer: str | None = None,
        init_from: str | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        sl_normalisation: str = "per_task",
        partial_supervision: str = "none",
        partial_kwargs: dict | None = None,
        train_gt_substitution: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # fail early on unknown names (each lists the known ones)
        weighting_cls = WEIGHTINGS.get(weighting)
        OPTIMIZERS.get(optimizer)
        SCHEDULES.get(scheduler)
        SL_REDUCTIONS.get(sl_normalisation)
        PARTIAL_SUPERVISION.get(partial_supervision)
        if task_weights and weighting not in FIXED_WEIGHTS_ARGUMENT:
            raise ValueError(
                f"task_weights is used by the weightings {sorted(FIXED_WEIGHTS_ARGUMENT)}, "
                f"not by {weighting!r}; use loss_weights_for_metric for the headline metric"
            )
        self.automatic_optimization = not weighting_cls.requires_manual_optimization
        self.task_names: list[str] = []
        self.task_objects: dict[str, Any] = {}
        self.net: nn.Module | None = None
        self.weighting: LossWeighting | None = None
        self._compiled: dict[str, Any] = {}
        self._init_loaded = False
        if tasks is not None:
            self._build(list(tasks), num_classes)

    # ------------------------------------------------------------------ building
    def _build(self, tasks: list[str], num_classes: Mapping[str, int] | None) -> None:
        hp = self.hparams
        if not tasks:
            raise ValueError("MultiTaskModule needs at least one task (model.tasks is empty)")
        self.task_names = list(tasks)
        self.task_objects = build_tasks(self.task_names, num_classes, hp.task_options)
        self.net = build_model(
            hp.model,
            self.task_objects,
            backbone=hp.backbone,
            pretrained=hp.pretrained,
            loss_prediction=hp.loss_prediction,
            **dict(hp.model_kwargs or {}),
        )
        kw = dict(hp.weighting_kwargs or {})
        if hp.task_weights:
            kw[FIXED_WEIGHTS_ARGUMENT[hp.weighting]] = dict(hp.task_weights)
        if WEIGHTINGS.get(hp.weighting).uses_task_kinds:
            kw.setdefault("task_kinds", {t: task.kind for t, task in self.task_objects.items()})
        self.weighting = create_weighting(hp.weighting, self.task_names, **kw)
        # MTPSL / SSL terms for partially labelled images (mtal.training.partial)
        self.partial = create_partial_supervision(
            hp.partial_supervision, self.task_objects, self.net, **dict(hp.partial_kwargs or {})
        )
        metric_w = dict(hp.loss_weights_for_metric or hp.task_weights or {})
        unknown = [t for t in metric_w if t not in self.task_names]
        if unknown:
            raise ValueError(
                f"loss_weights_for_metric/task_weights name task(s) {unknown} not in "
                f"tasks={self.task_names}"
            )
        self.register_buffer(
            "metric_weights",
            torch.tensor([float(metric_w.get(t, 1.0)) for t in self.task_names]),
            persistent=False,
        )
        self.train_losses = nn.ModuleDict({t: MeanMetric() for t in self.task_names})
        self.eval_losses = nn.ModuleDict(
            {s: nn.ModuleDict({t: MeanMetric() for t in self.task_names}) for s in EVAL_STAGES}
        )
        self.eval_metrics = nn.ModuleDict(
            {
                s: nn.ModuleDict({t: task.metric() for t, task in self.task_objects.items()})
                for s in EVAL_STAGES
            }
        )

    def setup(self, stage: str) -> None:
        """Build from the datamodule's tasks when ``tasks`` was not given, check the task
        order and load ``init_from`` (once; a ``ckpt_path`` given to the trainer wins)."""
        dm = getattr(self._trainer, "datamodule", None)
        dm_tasks = getattr(dm, "tasks", None)
        if self.net is None:
            if dm_tasks is None:
                raise ValueError(
                    "MultiTaskModule has no tasks: set model.tasks (e.g. [semseg, depth]) "
                    "or use a datamodule that has a `tasks` attribute"
                )
            num_classes = self.hparams.num_classes or getattr(dm, "num_classes", None)
            self.hparams["tasks"] = list(dm_tasks)
            self.hparams["num_classes"] = dict(num_classes) if num_classes else None
            self._build(list(dm_tasks), num_classes)
        if dm_tasks is not None and list(dm_tasks) != self.task_names:
            raise ValueError(
                f"the datamodule's tasks {list(dm_tasks)} differ from the model's tasks "
                f"{self.task_names}; the batch columns follow the datamodule, so set "
                f"model.tasks to the same list in the same order"
            )
        if self.hparams.init_from and not self._init_loaded:
            self.load_model_weights(self.hparams.init_from)
            self._init_loaded = True

    def load_model_weights(self, path: str | Path) -> None:
        """Load only the network weights from a Lightning checkpoint or a plain state dict
        (``weights_only=True``); optimiser, scheduler and weighting state are not read."""
        assert self.net is not None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"init_from: checkpoint {path} does not exist; give the path of a .ckpt "
                f"written by a previous fit (or set init_from: null)"
            )
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"init_from: cannot read {path} as a weights-only torch checkpoint ({exc})"
            ) from exc
        if not isinstance(ckpt, Mapping):
            raise ValueError(f"init_from: {path} holds a {type(ckpt).__name__}, not a state dict")
        state = ckpt.get("state_dict", ckpt)
        if any(k.startswith("net.") for k in state):
            state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        own = self.net.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = sorted(
            f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in set(own) & set(state)
            if tuple(state[k].shape) != tuple(own[k].shape)
        )
        if missing or unexpected or shapes:
            raise ValueError(
                f"init_from: {path} does not fit this network ({self.hparams.model}, "
                f"backbone {self.hparams.backbone}, tasks {self.task_names}): "
                f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}, "
                f"shape mismatches {shapes[:5]}; use the same model configuration"
            )
        self.net.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ forward
    def _runner(self) -> nn.Module:
        assert self.net is not None, "the network is built at setup (no tasks given yet)"
        if not self.hparams.compile:
            return self.net
        if "net" not in self._compiled:
            self._compiled["net"] = torch.compile(self.net, backend=self.hparams.compile_backend)
        return self._compiled["net"]

    def forward(self, image: Tensor, **kwargs: Any) -> MultiTaskOutput:
        """Run the network (``kwargs`` as in the model contract: committee, gt, ...)."""
        return self._runner()(image, **kwargs)

    def _per_sample(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        """``B×K`` per-sample losses in task order."""
        return torch.stack(
            [self.task_objects[t].loss(preds[t], targets[t]) for t in self.task_names], dim=1
        )

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Training losses of a batch: ``total``, ``task_losses`` (K), ``per_sample`` (B×K,
        final predictions), ``weights`` (effective), ``ll4al`` and the model ``output``."""
        hp = self.hparams
        targets = batch["targets"]
        labelled = batch["labelled"].to(torch.bool)
        order = int(getattr(self.net, "committee_order", 0)) if self._trains_committee() else 0
        kwargs: dict[str, Any] = {"committee": order} if order else {}
        if hp.train_gt_substitution:
            # PartAL option (off by default): teacher-force the labelled tasks' ground truth
            # into the distillation input during training, as at scoring time
            kwargs.update(gt=dict(targets), gt_mask=labelled)
        out: MultiTaskOutput = self(batch["image"], **kwargs)
        per_sample = self._per_sample(out.final, targets)
        weight = batch["weight"] if hp.use_sample_weights else None
        # WACV24 Eq. 5: s_k scales the final-prediction loss only; deep supervision of the
        # initial predictions is reduced over the labelled samples without s_k
        reduce = SL_REDUCTIONS.get(hp.sl_normalisation)
        task_vec = reduce(per_sample, labelled, weight)
        if out.initial is not None and hp.deep_supervision:
            initial_ps = self._per_sample(out.initial, targets)
            task_vec = task_vec + hp.deep_supervision * reduce(initial_ps, labelled)
        task_losses = dict(zip(self.task_names, task_vec.unbind(0)))
        total, eff = self.weighting(task_losses)
        ll4al = None
        if hp.loss_prediction:
            if out.loss_pred is None:
                raise ValueError(
                    f"loss_prediction=True but model {hp.model!r} returned no loss_pred; "
                    f"build it with loss_prediction=True"
                )
            ll4al = masked_ranking_loss(
                out.loss_pred, per_sample.detach(), labelled, hp.ll4al_margin
            )
            total = total + hp.ll4al_weight * ll4al
        partial = self.partial(self, batch, out, labelled) if self.partial is not None else None
        if partial is not None:
            total = total + partial
        committee = self.committee_loss(out, targets, labelled) if order else None
        if committee is not None:
            total = total + committee
        if not torch.isfinite(total):
            ids = (
                batch["index"].tolist() if torch.is_tensor(batch["index"]) else list(batch["index"])
            )
            raise FloatingPointError(
                f"non-finite training loss {float(total)} at epoch {self.current_epoch}, "
                f"step {self.global_step}; batch sample ids {ids}; per-task losses "
                f"{_fmt_losses(self.task_names, task_vec)}"
                + (f"; ll4al {float(ll4al):.6g}" if ll4al is not None else "")
                + (
                    f"; {hp.partial_supervision} {float(partial):.6g}"
                    if partial is not None
                    else ""
                )
            )
        return {
            "total": total,
            "task_losses": task_losses,
            "per_sample": per_sample,
            "labelled": labelled,
            "weights": eff,
            "ll4al": ll4al,
            "partial": partial,
            "committee": committee,
            "output": out,
        }

    def _trains_committee(self) -> bool:
        return bool(getattr(self.net, "trains_committee", False))

    def committee_loss(
        self, out: MultiTaskOutput, targets: Mapping[str, Tensor], labelled: Tensor
    ) -> Tensor:
        """WACV24 Sec. 3.2: the learnable committee members ŷ_{k,S} are trained on the
        labelled set with task k's loss, ``Σ_k Σ_S mean_{b labelled for k} L_k(ŷ_{k,S}, y_k)``
        (no s_k and no task weights: the blocks only serve selection)."""
        assert out.committee is not None
        total = labelled.new_zeros((), dtype=torch.float32)
        for k, t in enumerate(self.task_names):
            task = self.task_objects[t]
            for name, raw in out.committee[t].items():
                if name == "initial":
                    continue
                total = (
                    total
                    + reduce_task_losses(
                        task.loss(raw, targets[t]).unsqueeze(1), labelled[:, k : k + 1]
                    ).sum()
                )
        return total

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        """Reset the epoch loss means; switch LL4AL to detached features from
        ``ll4al_detach_epoch`` on."""
        for t in self.task_names:
            self.train_losses[t].reset()
        epoch = self.hparams.ll4al_detach_epoch
        if self.hparams.loss_prediction and epoch is not None:
            if not hasattr(self.net, "loss_pred_detach"):
                raise ValueError(
                    f"ll4al_detach_epoch is set but model {self.hparams.model!r} has no "
                    f"`loss_pred_detach` switch; unset ll4al_detach_epoch"
                )
            self.net.loss_pred_detach = self.current_epoch >= epoch

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One training step (automatic optimisation, or GradNorm's manual one)."""
        res = self.compute_losses(batch)
        if not self.automatic_optimization:
            self._manual_step(res)
        self._log_train(res, batch_size=int(batch["image"].shape[0]))
        return res["total"]

    def gradnorm_parameters(self) -> list[Tensor]:
        """The last shared layer's trainable parameters (GradNorm's W)."""
        assert self.net is not None
        name = self.hparams.gradnorm_layer
        if name:
            try:
                layer = self.net.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(
                    f"gradnorm_layer={name!r} is not a submodule of the {self.hparams.model} "
                    f"network ({exc})"
                ) from exc
            params = [p for p in layer.parameters() if p.requires_grad]
        else:
            trunk = getattr(self.net, "encoder", None) or getattr(self.net, "backbone", None)
            layers = [
                m
                for m in (trunk.modules() if trunk is not None else [])
                if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.requires_grad
            ]
            params = [layers[-1].weight] if layers else []
        if not params:
            raise ValueError(
                "GradNorm found no trainable shared layer; set model.gradnorm_layer to the "
                "name of the last shared layer (e.g. 'encoder.fuse')"
            )
        return params

    def _manual_step(self, res: dict[str, Any]) -> None:
        """GradNorm: network step on Σ w_k·L_k, weights step on L_grad, renormalise."""
        opt = self.optimizers()
        sch = self.lr_schedulers()
        weighting = self.weighting
        gn_loss = weighting.gradnorm_step(res["task_losses"], self.gradnorm_parameters())
        w_params = [p for p in weighting.parameters() if p.requires_grad]
        w_grads = torch.autograd.grad(gn_loss, w_params, retain_graph=True, allow_unused=True)
        opt.zero_grad()
        self.manual_backward(res["total"])
        for p, g in zip(w_params, w_grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        opt.step()
        weighting.renormalize()
        if sch is not None:
            sch.step()
        self.log("train/gradnorm_loss", gn_loss.detach(), on_step=True, on_epoch=True)

    def _log_train(self, res: dict[str, Any], batch_size: int) -> None:
        self.log(
            "train/loss",
            res["total"].detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size,
        )
        counts = res["labelled"].sum(0)
        for k, t in enumerate(self.task_names):
            self.train_losses[t].update(res["task_losses"][t].detach(), counts[k])
            self.log(f"train/{t}/weight", res["weights"][t], on_step=True, on_epoch=False)
        for name in ("partial", "committee"):
            if res.get(name) is None:
                continue
            label = self.hparams.partial_supervision if name == "partial" else "committee"
            self.log(
                f"train/{label}_loss",
                res[name].detach(),
                on_step=True,
                on_epoch=True,
                batch_size=batch_size,
            )
        if res["ll4al"] is not None:
            self.log(
                "train/ll4al_loss",
                res["ll4al"].detach(),
                on_step=True,
                on_epoch=True,
                batch_size=batch_size,
            )

    def on_train_epoch_end(self) -> None:
        """Log ``train/<task>/loss`` (labelled-sample means of the epoch) and feed the
        weighting's epoch hook (DWA)."""
        means: dict[str, float] = {}
        for t in self.task_names:
            metric = self.train_losses[t]
            # computed on every rank (it syncs); a task with no labelled sample gives 0/0
            value = metric.compute() if self._global_count(metric.update_count) else None
            if value is not None and bool(torch.isfinite(value)):
                means[t] = float(value)
                self.log(f"train/{t}/loss", value)
            metric.reset()
        self.weighting.on_train_epoch_end(means)

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        out: MultiTaskOutput = self(batch["image"])
        labelled = batch["labelled"].to(torch.bool)
        per_sample = self._per_sample(out.final, batch["targets"])
        for k, t in enumerate(self.task_names):
            mask = labelled[:, k]
            losses = torch.where(mask, per_sample[:, k], per_sample.new_zeros(()))
            self.eval_losses[stage][t].update(losses, mask.to(losses.dtype))
            if bool(mask.any()):
                target = batch["targets"][t]
                if isinstance(target, list):  # per-sample targets (boxes): select by mask
                    target = [x for x, keep in zip(target, mask.tolist()) if keep]
                else:
                    target = target[mask]
                self.eval_metrics[stage][t].update(out.final[t][mask], target)

    def _global_count(self, count: int) -> int:
        """``count`` summed over DDP ranks, so every rank takes the same compute branch."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return int(count)
        total = trainer.strategy.reduce(
            torch.tensor(float(count), device=self.device), reduce_op="sum"
        )
        return int(total.item())

    def _eval_epoch_end(self, stage: str) -> None:
        weighted: list[Tensor] = []
        for k, t in enumerate(self.task_names):
            loss_metric = self.eval_losses[stage][t]
            value = loss_metric.compute() if self._global_count(loss_metric.update_count) else None
            if value is not None and bool(torch.isfinite(value)):
                self.log(f"{stage}/{t}/loss", value)
                weighted.append(self.metric_weights[k] * value)
            loss_metric.reset()
            task_metric = self.eval_metrics[stage][t]
            if self._global_count(task_metric.update_count):
                for key, v in task_metric.compute().items():
                    v = torch.as_tensor(v)
                    if v.numel() == 1:
                        self.log(f"{stage}/{t}/{key}", v.reshape(()).float())
            task_metric.reset()
        if weighted:
            self.log(f"{stage}/mtl_loss", torch.stack(weighted).sum(), prog_bar=True)

    def _reset_eval(self, stage: str) -> None:
        # reset in the loop's own grad mode: states reset under inference mode (a previous
        # trainer.validate) are inference tensors that a later no-grad loop cannot update
        for t in self.task_names:
            self.eval_losses[stage][t].reset()
            self.eval_metrics[stage][t].reset()

    def on_validation_epoch_start(self) -> None:
        """Start the validation epoch with fresh loss and metric states."""
        self._reset_eval("val")

    def on_test_epoch_start(self) -> None:
        """Start the test epoch with fresh loss and metric states."""
        self._reset_eval("test")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Accumulate per-task losses and metrics over the labelled samples."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log ``val/<task>/loss``, ``val/<task>/<metric>`` and ``val/mtl_loss``."""
        self._eval_epoch_end("val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """As ``validation_step``, logged under ``test/``."""
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Log ``test/<task>/loss``, ``test/<task>/<metric>`` and ``test/mtl_loss``."""
        self._eval_epoch_end("test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> MultiTaskOutput:
        """The network's :class:`MultiTaskOutput` for ``batch["image"]`` (pool scoring)."""
        return self(batch["image"])

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """Optimiser from ``OPTIMIZERS`` (weighting parameters in their own group, no weight
        decay) and a per-step LR schedule from ``SCHEDULES`` over the estimated steps."""
        hp = self.hparams
        assert self.net is not None and self.weighting is not None
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.net.parameters() if p.requires_grad]}
        ]
        w_params = [p for p in self.weighting.parameters() if p.requires_grad]
        if w_params:
            groups.append(
                {
                    "params": w_params,
                    "weight_decay": 0.0,
                    "lr": hp.lr if hp.weighting_lr is None else hp.weighting_lr,
                }
            )
        if self.partial is not None:  # the mapping network (MTPSL), trained with the net
            groups += self.partial.param_groups(hp.lr)
        opt = create_optimizer(
            hp.optimizer, groups, lr=hp.lr, weight_decay=hp.weight_decay, momentum=hp.momentum
        )
        if hp.scheduler == "none":
            return opt
        max_steps = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, schedule_lambda(hp.scheduler, max_steps, power=hp.poly_power)
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1},
        }

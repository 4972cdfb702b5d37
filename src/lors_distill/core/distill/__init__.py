"""LoRS trajectory matching: learn synthetic pairs, their similarity and two inner learning rates.

One outer iteration (PAPER.md section 3):

1. pick a random expert and start epoch ``s`` in ``[0, max_start_epoch)``; the target is
   snapshot ``s + expert_epochs``;
2. from ``theta_s`` run ``syn_steps`` SGD steps on mini-batches of the synthetic set (without
   replacement), ``theta <- theta - eta * g`` with one learnable ``eta`` per branch;
3. loss = ``||theta_end - theta_target||^2 / ||theta_s - theta_target||^2`` per branch, summed
   (or over all parameters at once with ``merge_branches``);
4. backpropagate into images, texts, similarity parameters and the etas.

Gradients (``grad_mode``; PAPER.md section 3):

* ``tesla``: TESLA's first-order gradient in constant memory. With ``G = sum_i g_i`` and
  ``theta_end = theta_s - eta G``, ``dL/dg_i = 2 eta (theta_target - theta_end) / D``, so a first
  pass without graph computes ``G``, and a second pass recomputes each ``g_i`` with a graph and
  backpropagates that constant vector into step ``i`` only. Each ``g_i`` is taken at the
  parameters of step ``i`` held constant: how ``theta_i`` depends on the synthetic data of
  earlier steps and on ``eta`` is dropped (as in the LoRS reference).
* ``tesla_one_graph``: the same first-order gradient from one graph over all steps (memory
  grows with ``syn_steps``; faster where memory is no concern); tested to equal ``tesla``.
* ``full``: the exact gradient of the matching loss through the unrolled inner loop (MTT, and
  MTT-VL's reference code): ``theta_{i+1} = theta_i - eta g_i(theta_i)`` keeps its graph, so
  the gradient includes the dependence of every ``theta_i`` on the synthetic data of earlier
  steps and on ``eta``. Memory grows with ``syn_steps``.

With ``merge_branches`` the synthetic data and ``S`` follow one distance ratio over all
parameters, while the two inner learning rates follow the per-branch ratios (as the reference
does for COCO). Dropout masks are seeded per step, so every pass sees identical networks.
"""

from lors_distill.core.distill.expert_bank import ExpertBank
from lors_distill.core.distill.matcher import FastPath, TrajectoryMatcher
from lors_distill.core.distill.methods import (
    BASELINES,
    FIRST_ORDER,
    FROZEN_METHODS,
    METHODS,
    method_settings,
)
from lors_distill.core.distill.outer import (
    DistillationDivergedError,
    Distiller,
    build_optimizer,
)
from lors_distill.core.distill.run import run_distillation
from lors_distill.core.distill.synthetic import SyntheticSet, init_synthetic_pairs

__all__ = [
    "BASELINES",
    "FIRST_ORDER",
    "FROZEN_METHODS",
    "METHODS",
    "DistillationDivergedError",
    "Distiller",
    "ExpertBank",
    "FastPath",
    "SyntheticSet",
    "TrajectoryMatcher",
    "build_optimizer",
    "init_synthetic_pairs",
    "method_settings",
    "run_distillation",
]

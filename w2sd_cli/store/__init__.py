"""The model store: pull, verify, cache and find models offline.

Hub references live in the user's standard HF cache; URL references in a content-addressed store under
``W2SD_HOME``; local paths where they are. Everything is verified before first use. No printing here:
progress goes to callbacks, failures are ``W2SDError`` subclasses.
"""

from __future__ import annotations

from w2sd_cli.store.cache import (
    ModelStatus,
    PrunePlan,
    StoreItem,
    VerifyResult,
    execute_prune,
    model_status,
    plan_prune,
    store_items,
    verify,
)
from w2sd_cli.store.checks import SourceMismatch
from w2sd_cli.store.locate import ensure_models, local_status, locate, pull
from w2sd_cli.store.plan import PlannedFile, PlannedModel, PullPlan, human, plan_pull
from w2sd_cli.store.redact import redact_url
from w2sd_cli.store.safety import check_weights_file, load_pickle_checkpoint, sniff

__all__ = [
    "ModelStatus",
    "PlannedFile",
    "PlannedModel",
    "PrunePlan",
    "PullPlan",
    "SourceMismatch",
    "StoreItem",
    "VerifyResult",
    "check_weights_file",
    "ensure_models",
    "execute_prune",
    "human",
    "load_pickle_checkpoint",
    "local_status",
    "locate",
    "model_status",
    "plan_prune",
    "plan_pull",
    "pull",
    "redact_url",
    "sniff",
    "store_items",
    "verify",
]

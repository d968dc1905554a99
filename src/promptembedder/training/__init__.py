"""Contrastive training of PromptEmbedder and its baselines under one loop (see docs/architecture.md):
settings (config), the model a run trains (build), batches (batching), losses (losses, grad_cache),
checkpoints (checkpoint), the state callbacks see (state), the built-in callbacks (callbacks) and the loop (trainer)."""

from .batching import make_batches
from .build import build_model
from .config import DEFAULT_LR, METHODS, TRANSFER_ALIGNMENT_LR, TrainingConfig, tau_at
from .state import TrainerCallback, TrainerControl, TrainerState, TrainResult
from .trainer import Trainer, train

__all__ = ["DEFAULT_LR", "METHODS", "TRANSFER_ALIGNMENT_LR", "TrainResult", "Trainer", "TrainerCallback",
           "TrainerControl", "TrainerState", "TrainingConfig", "build_model", "make_batches", "tau_at", "train"]

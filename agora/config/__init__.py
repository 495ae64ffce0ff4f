"""The recipe: its typed schema (:mod:`~agora.config.schema`), Θ (:mod:`~agora.config.space`) and where
it enters, read, overridden and validated once (:mod:`~agora.config.load`)."""

from agora.config.load import DEFAULT_TRAINER, apply_overrides, load_recipe, parse_override, validate_recipe
from agora.config.schema import (AgoraConfig, BudgetConfig, DataConfig, ModelConfig, OptimConfig, OutputConfig,
                                 RAY_EXTRA, RayConfig, RunConfig, SearchConfig, TeacherConfig, TrialConfig)
from agora.config.space import Space, Theta

__all__ = ["DEFAULT_TRAINER", "RAY_EXTRA", "AgoraConfig", "BudgetConfig", "DataConfig", "ModelConfig", "OptimConfig",
           "OutputConfig", "RayConfig", "RunConfig", "SearchConfig", "Space", "TeacherConfig", "Theta", "TrialConfig",
           "apply_overrides", "load_recipe", "parse_override", "validate_recipe"]

"""eager: entropy-aware branching generation (EAGER) on llama.cpp."""

from eager.api import ThetaChoice, generate, load_backend, resolve_theta
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig
from eager.core.results import GenerationResult, SequenceResult
from eager.core.tree import ForkEvent, TreeRequest
from eager.core.results import StepStats
from eager.engine import Engine
from eager.errors import EagerError
from eager.models import MODELS, resolve_model

__all__ = [
    "MODELS",
    "BranchingConfig",
    "Engine",
    "EagerError",
    "EngineConfig",
    "ForkEvent",
    "GenerationResult",
    "SamplingConfig",
    "SequenceResult",
    "StepStats",
    "ThetaChoice",
    "TreeRequest",
    "generate",
    "load_backend",
    "resolve_model",
    "resolve_theta",
]

__version__ = "0.1.0"

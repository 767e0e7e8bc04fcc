"""eager: entropy-aware branching generation (EAGER) on llama.cpp."""

from eager.api import generate, load_backend
from eager.config import BranchingConfig, SamplingConfig
from eager.engine import Engine, StepStats
from eager.errors import EagerError
from eager.models import MODELS, resolve_model
from eager.results import GenerationResult, SequenceResult
from eager.sequence import ForkEvent, Request

__all__ = [
    "MODELS",
    "BranchingConfig",
    "Engine",
    "EagerError",
    "ForkEvent",
    "GenerationResult",
    "Request",
    "SamplingConfig",
    "SequenceResult",
    "StepStats",
    "generate",
    "load_backend",
    "resolve_model",
]

__version__ = "0.1.0"

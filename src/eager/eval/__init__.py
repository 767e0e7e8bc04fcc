"""Evaluation: data sets -> trees -> graded sequences -> reallocation -> metrics -> report."""

from eager.eval.code import CodeVerifier
from eager.eval.config import EvalConfig
from eager.eval.methods import EVAL_METHODS
from eager.eval.runner import Progress, run_eval

__all__ = ["EVAL_METHODS", "CodeVerifier", "EvalConfig", "Progress", "run_eval"]

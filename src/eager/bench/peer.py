"""(e) A peer: Hugging Face transformers ``generate(num_return_sequences=M)`` on the
same GGUF (optional, ``pip install -e .[bench]``). Without it the peer is skipped
with a message, never an error.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any, Sequence

from eager.bench.config import BenchConfig

TRANSFORMERS_MISSING = "skipped: transformers not installed (pip install -e .[bench])"


def _load_gguf(auto_model, model_path: Path):
    """(the float32 torch model, None), or (None, why it could not be loaded)."""
    import torch

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF conversion's own progress bar
            model = auto_model.from_pretrained(str(model_path.parent), gguf_file=model_path.name, dtype=torch.float32)
    except (ImportError, ValueError, OSError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"skipped: transformers could not load the GGUF ({first_line})"
    return model, None


def measure_transformers(model_path: Path, prompt_ids: Sequence[int], cfg: BenchConfig, ours_tokens_per_s: float) -> dict[str, Any]:
    """Hugging Face transformers ``generate(num_return_sequences=M)`` on the same GGUF.

    transformers dequantises the GGUF to float32 torch weights; the prompt is
    our token ids (the same vocabulary); every sequence is forced to
    ``max_tokens`` new tokens, as many as our engine's longest in (a), at the
    same temperature. Its load is not timed.
    """
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError:
        return {"vs_transformers": None, "transformers_message": TRANSFORMERS_MISSING}
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(cfg.n_threads)
    model, why_not = _load_gguf(AutoModelForCausalLM, model_path)
    if model is None:
        return {"vs_transformers": None, "transformers_message": why_not}
    input_ids = torch.tensor([list(prompt_ids)])
    new = cfg.sizes.max_tokens

    def generate(n: int):
        with torch.inference_mode():
            return model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, temperature=0.6, top_k=0, top_p=1.0,
                max_new_tokens=n, min_new_tokens=n, num_return_sequences=cfg.M, pad_token_id=0,
            )

    torch.manual_seed(cfg.seed)
    generate(2)  # warm-up
    start = time.perf_counter()
    out = generate(new)
    seconds = time.perf_counter() - start
    tokens = cfg.M * (out.shape[1] - input_ids.shape[1])
    rate = tokens / seconds
    return {
        "vs_transformers": ours_tokens_per_s / rate,
        "transformers_message": f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        "transformers_detail": {"tokens_per_s": rate, "tokens": int(tokens), "seconds": seconds, "new_tokens_each": new},
    }

"""KV cache options: the cache's type (f16, q8_0) and flash attention reach llama.cpp from the config."""

from __future__ import annotations

import pytest

from eager.api import generate, load_backend
from eager.backends.base import StepItem
from eager.cli import main
from eager.core.config import EngineConfig
from eager.errors import EagerError

VALID = [("f16", "auto"), ("f16", "on"), ("f16", "off"), ("q8_0", "auto"), ("q8_0", "on")]


def small_backend(kv_type: str, flash_attn: str):
    return load_backend("smollm2-135m", ctx=512, max_sequences=4, threads=1, kv_type=kv_type, flash_attn=flash_attn)


@pytest.mark.parametrize("kv_type, flash_attn", VALID)
def test_every_cache_type_and_flash_attention_setting_loads_and_generates(kv_type, flash_attn):
    backend = small_backend(kv_type, flash_attn)
    try:
        [result] = generate("What is 2 + 3?", backend=backend, method="parallel", M=2, max_tokens=6, seed=1)
        assert (backend.kv_type, backend.flash_attn) == (kv_type, flash_attn)
        assert len(result.sequences) == 2 and all(s.token_ids for s in result.sequences)
        assert backend.cells_in_use == 0
    finally:
        backend.close()


def stored_bytes_per_cell(backend) -> float:
    """What llama.cpp itself stores per cell: the growth of a sequence's saved state over 100 tokens."""
    lib, ctx = backend._lib, backend._ctx
    seq = backend.new_sequence()
    backend.step([StepItem(seq, (1,))])
    before = lib.llama_state_seq_get_size(ctx, seq)
    backend.step([StepItem(seq, tuple(range(10, 110)))])
    grown = lib.llama_state_seq_get_size(ctx, seq) - before
    backend.release(seq)
    return grown / 100


def test_q8_0_takes_about_half_the_bytes_of_f16_per_cell_as_llama_cpp_stores_them():
    measured = {}
    for kv_type in ("f16", "q8_0"):
        backend = small_backend(kv_type, "auto")
        try:
            measured[kv_type] = (backend.kv_bytes_per_cell, stored_bytes_per_cell(backend))
        finally:
            backend.close()
    (f16, f16_stored), (q8, q8_stored) = measured["f16"], measured["q8_0"]
    assert q8 / f16 == pytest.approx(34 / 64)  # 32 int8 values and one f16 scale against 32 f16 values
    # the saved state adds a position and a sequence id per cell: within 1% of the K and V bytes
    assert f16 == pytest.approx(f16_stored, rel=0.01) and q8 == pytest.approx(q8_stored, rel=0.01)


def test_the_defaults_are_llama_cpps_own_f16_cache_and_automatic_flash_attention():
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    assert (EngineConfig().kv_type, EngineConfig().flash_attn) == ("f16", "auto")
    assert (params.type_k, params.type_v) == (llama_cpp.GGML_TYPE_F16, llama_cpp.GGML_TYPE_F16)
    assert params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO


def test_a_quantized_cache_without_flash_attention_is_one_clear_error_before_loading():
    with pytest.raises(EagerError, match="^kv_type q8_0 needs flash_attn on"):
        EngineConfig(kv_type="q8_0", flash_attn="off")
    with pytest.raises(EagerError, match="^kv_type q8_0 needs flash_attn on"):
        load_backend("no-such-model", kv_type="q8_0", flash_attn="off")


@pytest.mark.parametrize(
    "options, message",
    [({"kv_type": "q4_0"}, "unknown kv_type 'q4_0'; choose from f16, q8_0"), ({"flash_attn": "yes"}, "unknown flash_attn 'yes'; choose from auto, on, off")],
)
def test_an_unknown_setting_names_the_choices(options, message):
    with pytest.raises(EagerError, match=message):
        EngineConfig(**options)


def test_generate_help_lists_the_kv_flags_and_the_cli_error_names_flags(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--kv-type {f16,q8_0}" in out and "--flash-attn {auto,on,off}" in out
    assert main(["generate", "--prompt", "x", "--kv-type", "q8_0", "--flash-attn", "off"]) == 2
    assert "eager: error: --kv-type q8_0 needs --flash-attn on" in capsys.readouterr().err

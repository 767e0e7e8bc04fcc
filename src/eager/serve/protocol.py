"""The request bodies, as the OpenAI API defines them, plus the ``eager`` object.

Pydantic checks types (a wrong type is a 400 in OpenAI's error shape); the
limits that depend on the server's settings are checked in
:mod:`eager.serve.requests`. Fields OpenAI has and eager cannot honour are
accepted only at their neutral value, with a message saying so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EagerOptions(BaseModel):
    """How the n choices are grown (the OpenAI client's ``extra_body={"eager": {...}}``)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["eager-init", "parallel"] = Field("eager-init", description="eager-init: one tree that forks where the model is uncertain; parallel: n independent samples")
    theta: float | Literal["auto"] = Field("auto", description="entropy threshold in nats, or auto: the model's calibrated value")
    M: int | None = Field(None, ge=1, description="most sequences per tree (default: n)")
    W: int | None = Field(None, ge=1, description="window: no forks after W steps in a row without one")
    entropy: Literal["topk", "full"] = Field("topk", description="top-20 renormalised entropy (paper) or the full vocabulary's")
    dynamic_theta: bool = Field(True, description="theta_eff = max(theta, running P99 of the prompt's entropies)")
    fill: bool = Field(False, description="grow further trees until exactly n choices")


class StreamOptions(BaseModel):
    include_usage: bool = True


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="the same seed gives the same tree")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    eager: EagerOptions = Field(default_factory=EagerOptions)


class CompletionRequest(_Common):
    prompt: str | list[str]
    logprobs: int | None = None
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False

"""`eager serve` on the real SmolLM2-135M: the openai client gets real text, theta auto is the model's own."""

from __future__ import annotations

import threading
import time

import openai
import uvicorn

from eager.serve import ServeConfig, create_app
from serve_helpers import free_port, wait_idle

MODEL = "smollm2-135m"


def test_smollm_answers_completions_and_chat_through_the_openai_client(smollm):
    config = ServeConfig(port=free_port())
    app = create_app(smollm, model_name=MODEL, config=config)  # theta auto: the shipped value
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{config.port}/v1", api_key="none", max_retries=0, timeout=120)
        r = client.completions.create(model=MODEL, prompt="The capital of France is", n=4, max_tokens=8, seed=0, temperature=0.6)
        eager = r.model_extra["eager"]
        assert eager["theta_source"] == "shipped" and 1 <= len(r.choices) <= 4
        assert all(c.text.strip() for c in r.choices) and r.usage.prompt_tokens > 3
        chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], n=2, max_tokens=6, seed=1, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
        assert text.strip()
        wait_idle(smollm, app)
        assert smollm.cells_in_use == 0
    finally:
        server.should_exit = True
        thread.join(20)

"""docs/img/playground.png: the playground of `eager serve` growing a real tree, in headless Chromium.

    .venv/bin/python scripts/playground-screenshot.py [--model qwen2.5-coder-0.5b] [--out docs/img/playground.png]

The server runs in this process on 127.0.0.1 (a free port); the page is driven
as a person would use it: type the prompt, n = 8, theta, a seed, submit, wait for "done".
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from eager.api import load_backend
from eager.serve import ServeConfig, create_app

PROMPT = "A baker makes 12 muffins per tray and bakes 7 trays. She sells all but 9 muffins. How many does she sell?"


def _shrink(path: str, height: int = 1330) -> None:
    """The page's top (the form, the root and its first children), 128 colours: a small PNG for the README."""
    from PIL import Image  # matplotlib's dependency

    image = Image.open(path).convert("RGB")
    image = image.crop((60, 0, image.width - 60, min(height, image.height)))
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--out", default="docs/img/playground.png")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", default="2")
    ap.add_argument("--theta", default="0.9", help="the docs' picture: 0.9 (at auto, 1.58, this easy prompt rarely forks)")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = load_backend(args.model, ctx=4096, threads=args.threads, max_sequences=16)
    app = create_app(backend, model_name=args.model, config=ServeConfig(port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        for field, value in (("prompt", PROMPT), ("n", "8"), ("max_tokens", str(args.max_tokens)), ("seed", args.seed), ("theta", args.theta)):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 1200, poll_frequency=0.5).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height + 40, 4000))
        driver.save_screenshot(args.out)
        _shrink(args.out)
        print(driver.find_element(By.ID, "status").text, "->", args.out)
    finally:
        driver.quit()
        server.should_exit = True
        backend.close()


if __name__ == "__main__":
    main()

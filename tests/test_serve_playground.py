"""The playground at /: served with no external asset; in headless Chromium a prompt grows a tree."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from serve_helpers import THETA, SlowMock, running_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def test_the_page_is_self_contained_and_streams_tree_snapshots():
    with running_server(api_key=None) as (url, app, backend):
        page = httpx.get(url + "/").text
        assert "<script>" in page and "http://" not in page and "https://" not in page
        body = {"model": "mock", "prompt": "grow", "n": 6, "max_tokens": 30, "seed": 2}
        with httpx.stream("POST", url + "/v1/eager/tree", json=body, timeout=30) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json

    last = json.loads(events[-2])
    assert last["done"] and len(last["result"]["sequences"]) >= 2 and last["result"]["forks"]
    assert last["result"]["theta"] == THETA  # the tree view colours tokens by entropy against it


@pytest.mark.browser
def test_typing_a_prompt_grows_branches_in_the_browser(tmp_path):
    if not (shutil.which(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium is not installed (scripts/setup.sh --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    with running_server(SlowMock(), api_key=None) as (url, app, backend):
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(url + "/")
            assert driver.execute_script("return typeof window.EagerTree.render") == "function"  # the tree view, inlined
            prompt = driver.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys("Why is the sky blue?")
            driver.find_element(By.ID, "max_tokens").clear()
            driver.find_element(By.ID, "max_tokens").send_keys("150")
            driver.find_element(By.ID, "go").click()
            WebDriverWait(driver, 30, poll_frequency=0.02).until(lambda d: d.find_element(By.ID, "status").text.startswith("growing"))
            assert driver.find_elements(By.CSS_SELECTOR, "#tree [data-branch]")  # drawn while it grows
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
            sequences = int(driver.find_element(By.ID, "status").text.split(": ")[1].split()[0])
            branches = driver.find_elements(By.CSS_SELECTOR, "#tree [data-branch]")
            assert sequences >= 2 and len(branches) == sequences
            assert len(driver.find_elements(By.CSS_SELECTOR, "#tree [data-fork]")) == sequences - 1
            driver.save_screenshot(str(tmp_path / "playground.png"))
            assert (tmp_path / "playground.png").stat().st_size > 1000
        finally:
            driver.quit()

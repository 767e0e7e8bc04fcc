"""The HTML tree view in a real browser: headless Chromium driven by Selenium."""

from __future__ import annotations

import os

import pytest

from eager.view import render_html, render_run_index

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium is not installed (scripts/setup.sh --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_draws_every_branch_and_fork_and_collapsing_hides_the_subtree(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from test_view import mock_tree

    tree = mock_tree()
    page = tmp_path / "tree.html"
    page.write_text(render_html(tree), encoding="utf-8")
    browser.get(page.as_uri())
    assert errors(browser) == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-branch]")) == len(tree["sequences"]) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-fork]")) == len(tree["forks"]) == 3
    tokens = browser.find_elements(By.CSS_SELECTOR, ".et-tok")
    assert len(tokens) == tree["generated_tokens"] and tokens[0].get_attribute("title").startswith("H=")

    child = browser.find_element(By.CSS_SELECTOR, '[data-branch="1"]')
    grandchild = browser.find_element(By.CSS_SELECTOR, '[data-branch="2"]')
    assert child.is_displayed() and grandchild.is_displayed()
    child.find_element(By.CSS_SELECTOR, ".et-head .et-toggle").click()
    assert child.is_displayed() and not grandchild.is_displayed()
    browser.find_element(By.CSS_SELECTOR, '[data-branch="0"] > .et-head .et-toggle').click()
    assert not child.is_displayed()

    shot = tmp_path / "tree.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    assert errors(browser) == []


def test_render_again_with_a_grown_tree_keeps_what_was_collapsed(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from test_view import mock_tree

    tree = mock_tree()
    partial = {**tree, "sequences": [dict(s, finish_reason=None) for s in tree["sequences"][:2]], "forks": tree["forks"][:1]}
    partial.pop("generated_tokens")
    page = tmp_path / "grow.html"
    page.write_text(render_html(partial), encoding="utf-8")
    browser.get(page.as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-branch]")) == 2
    assert browser.find_elements(By.CSS_SELECTOR, ".et-running")
    browser.find_element(By.CSS_SELECTOR, '[data-branch="0"] > .et-head .et-toggle').click()
    browser.execute_script("window.EagerTree.render(document.querySelector('.eager-page-tree'), arguments[0])", tree)
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-branch]")) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-fork]")) == 3
    assert not browser.find_element(By.CSS_SELECTOR, '[data-branch="1"]').is_displayed()
    assert errors(browser) == []


def test_the_run_index_filters_solved_and_unsolved_prompts(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from test_view import mock_tree

    def graded(ok: bool) -> dict:
        tree = mock_tree()
        for s in tree["sequences"]:
            s.update(answer="4" if ok else "5", correct=ok)
        return dict(tree, M=6)

    prompts = [{"id": "a", "question": "q", "gold": "4", "solved": True, "trees": [graded(True), graded(False)]},
               {"id": "b", "question": "q", "gold": "4", "solved": False, "trees": [graded(False)]}]
    page = tmp_path / "index.html"
    page.write_text(render_run_index(prompts), encoding="utf-8")
    browser.get(page.as_uri())
    assert errors(browser) == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-branch]")) == 12
    rows = browser.find_elements(By.CSS_SELECTOR, ".eager-prompt-row")
    Select(browser.find_element(By.ID, "eager-filter")).select_by_value("unsolved")
    assert [r.is_displayed() for r in rows] == [False, True]
    Select(browser.find_element(By.ID, "eager-filter")).select_by_value("solved")
    assert [r.is_displayed() for r in rows] == [True, False]

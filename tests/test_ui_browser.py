"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against real jobs.

One module-scoped world: two short MNIST DCGANs (learning rates 1e-3 and 2e-4, evaluated with
the MNIST classifier, sample grids every 50 and every 60 steps), a GAN on ring8 evaluated for
mode coverage, all trained by a real `gand worker --burst`; then a long ring8 job that a second
worker is running while the tests look; one `gand ui` process serves them all.

Every page is saved as a screenshot under the test's tmp folder (and into
$GAND_UI_SCREENSHOTS when set, which is how docs/*.png are made). Without Chromium the module
skips, except under CI, where it fails: deploy/test.sh installs Chromium first.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from support import MNIST, Dashboard, Gand, InProcessCli, make_env, wait_for

TOKEN = "browser-test-token-0123456789"
STEPS = 300
PLAYWRIGHT_TIMEOUT_MS = 60_000  # two shared cores: a page may wait on a busy CPU


def _chromium() -> str:
    for candidate in (os.environ.get("GAND_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = ("no Chromium for the browser tests: `bash deploy/browser.sh` installs it "
               "(apt-get install chromium), or set GAND_CHROMIUM")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable)
        yield b
        b.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, mnist_classifier):
    home = tmp_path_factory.mktemp("uibrowser")
    g = InProcessCli(Gand(home, make_env(home, "filesystem", "sqlite")))
    digits = ["dcgan", "--data", f"mnist:{MNIST}", "--steps", str(STEPS), "--batch-size", "64",
              "--set", "ngf=16", "--set", "ndf=16", "--seed", "1", "--eval-every", "150",
              "--eval-classifier", mnist_classifier, "--eval-n", "300", "--best-by", "fid",
              "--checkpoint-every", "150"]
    fast = g.submit(*digits, "--lr", "1e-3", "--sample-every", "50", "--name", "digits lr 1e-3")
    slow = g.submit(*digits, "--lr", "2e-4", "--sample-every", "60", "--name", "digits lr 2e-4")
    ring = g.submit("gan", "--data", "ring8", "--steps", str(STEPS), "--seed", "2",
                    "--sample-every", "50", "--eval-every", "100", "--eval-metric", "coverage",
                    "--best-by", "coverage", "--name", "ring8 coverage")
    assert g.worker().wait(timeout=900) == 0, g.worker_log()
    store = g.store()
    for job in (fast, slow, ring):
        assert store.get_job(job).status == "succeeded", (store.get_job(job).error, g.worker_log())
    live = g.submit("gan", "--data", "ring8", "--steps", "500000", "--seed", "3",
                    "--sample-every", "2000", "--checkpoint-every", "50000", "--name", "live ring8")
    g.worker()  # runs `live` for as long as the tests look
    wait_for(lambda: store.get_job(live).status == "running" and store.metrics(live), 180,
             "the live job to report metrics")
    ui = Dashboard(g.gand, token=TOKEN)
    shots = tmp_path_factory.mktemp("screenshots")
    yield {"g": g, "store": store, "ui": ui, "url": ui.url, "fast": fast, "slow": slow,
           "ring": ring, "live": live, "shots": shots}
    ui.stop()
    g.stop_workers()


@pytest.fixture
def page(browser, world):
    """A fresh page that fails the test on any script error (a refused action's 403 is the
    one error a test may expect)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text)
         if m.type == "error" and "status of 403" not in m.text else None)
    yield p
    context.close()
    assert not errors, errors


def _shot(world, page, name: str) -> Path:
    path = world["shots"] / name
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("GAND_UI_SCREENSHOTS"):
        folder = Path(os.environ["GAND_UI_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


def _loaded(page, selector: str) -> None:
    page.wait_for_function("s => { const i = document.querySelector(s); "
                           "return i && i.complete && i.naturalWidth > 0; }", arg=selector)


def test_jobs_page_shows_the_running_job_advancing_without_a_reload(world, page):
    from playwright.sync_api import expect

    page.goto(world["url"] + "/")
    live = page.locator(f'tr[data-job="{world["live"]}"]')
    expect(live.locator(".badge")).to_have_text("running")
    page.evaluate("window.sameDocument = true")
    first = int(live.locator(".steps").inner_text().split("/")[0])
    page.wait_for_function(
        "([id, n]) => parseInt(document.querySelector(`tr[data-job='${id}'] .steps`)"
        ".textContent) > n", arg=[world["live"], first])
    assert page.evaluate("window.sameDocument") is True  # moved by the stream, not a reload
    expect(live.locator(".eta")).to_have_text(re.compile(r"^\d+[smhd]"))
    expect(live.locator(".ips")).to_have_text(re.compile(r"^\d[\d.e+]*$"))
    # What runs comes first, then what ended; each finished job with its losses.
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(4)
    assert rows.first.get_attribute("data-job") == world["live"]
    for job in ("fast", "slow", "ring"):
        row = page.locator(f'tr[data-job="{world[job]}"]')
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row.locator(".steps")).to_have_text(f"{STEPS}/{STEPS}")
    _shot(world, page, "jobs.png")
    page.select_option("#filter-variant", "dcgan")
    expect(rows).to_have_count(2)
    page.select_option("#filter-variant", "")
    page.select_option("#filter-status", "running")
    expect(rows).to_have_count(1)
    assert "status=running" in page.url


def test_job_page_slider_walks_the_sample_grids(world, page):
    from playwright.sync_api import expect

    page.goto(f"{world['url']}/jobs/{world['fast']}")
    img = page.locator("#sample")
    expect(img).to_have_attribute("data-step", str(STEPS))
    _loaded(page, "#sample")
    last = img.get_attribute("src")
    page.keyboard.press("ArrowLeft")
    expect(img).to_have_attribute("data-step", str(STEPS - 50))
    assert img.get_attribute("src") != last
    _loaded(page, "#sample")
    page.locator("#slider").fill("0")
    expect(img).to_have_attribute("data-step", "50")
    expect(page.locator("#sample-step")).to_have_text("step 50  (1 of 6)")
    page.keyboard.press("ArrowRight")
    expect(img).to_have_attribute("data-step", "100")
    _loaded(page, "#sample")
    # The rest of the page: loss curves, FID with the best step, checkpoints, events, config.
    expect(page.locator("#loss-chart canvas")).to_have_count(1)
    expect(page.locator("#loss-chart")).to_have_attribute("data-last-step", str(STEPS))
    expect(page.locator('#eval-charts [data-key="fid"] canvas')).to_have_count(1)
    expect(page.locator("#best")).to_contain_text(re.compile(r"best checkpoint: step (150|300) by fid"))
    expect(page.locator("#checkpoints tr.best")).to_have_count(1)
    expect(page.locator("#events")).to_contain_text("succeeded")
    expect(page.locator("#config")).to_contain_text('"variant": "dcgan"')
    # What the worker's device made of it: fp32, or bf16 on a CPU with bf16 instructions.
    expect(page.locator("#subtitle")).to_contain_text(re.compile(r"ran as cpu (fp32|bf16)"))
    page.locator("#slider").fill("5")
    _loaded(page, "#sample")
    _shot(world, page, "job.png")


def test_job_page_curves_and_progress_update_live(world, page):
    from playwright.sync_api import expect

    page.goto(f"{world['url']}/jobs/{world['live']}")
    chart = page.locator("#loss-chart")
    expect(chart).to_have_attribute("data-last-step", re.compile(r"\d+"))
    first = int(chart.get_attribute("data-last-step"))
    page.wait_for_function("n => Number(document.querySelector('#loss-chart').dataset.lastStep) > n",
                           arg=first)
    expect(page.locator("#stepinfo")).to_contain_text(re.compile(r"ETA \d+[smhd].* · [\d.e+]+ img/s"))
    expect(page.locator("#status")).to_have_text("running")
    _shot(world, page, "job-live.png")
    page.goto(f"{world['url']}/jobs/{world['ring']}")
    expect(page.locator('#eval-charts [data-key="modes"] canvas')).to_have_count(1)
    expect(page.locator("#loss-chart")).to_have_attribute("data-last-step", str(STEPS))
    _loaded(page, "#sample")
    _shot(world, page, "job-ring8.png")


def test_compare_page_shows_two_jobs_grids_at_one_step(world, page):
    from playwright.sync_api import expect

    fast, slow = world["fast"], world["slow"]
    page.goto(f"{world['url']}/compare?ids={fast[:10]},{slow[:10]}")
    a = page.locator(f'.grid-panel[data-job="{fast}"]')
    b = page.locator(f'.grid-panel[data-job="{slow}"]')
    expect(page.locator(".grid-panel")).to_have_count(2)
    # Grids every 50 and every 60 steps: ten steps in all, the fifth is 150.
    expect(page.locator("#slider")).to_have_attribute("max", "9")
    page.locator("#slider").fill("4")
    expect(page.locator("#step")).to_have_text("step 150  (5 of 10)")
    expect(a.locator("img")).to_have_attribute("data-step", "150")
    expect(b.locator("img")).to_have_attribute("data-step", "120")  # nearest; earlier on a tie
    expect(b.locator(".grid-step")).to_have_text("step 120 (nearest to 150)")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#step")).to_contain_text("step 180")
    expect(a.locator("img")).to_have_attribute("data-step", "200")
    expect(b.locator("img")).to_have_attribute("data-step", "180")
    _loaded(page, f'.grid-panel[data-job="{fast}"] img')
    _loaded(page, f'.grid-panel[data-job="{slow}"] img')
    # Curves overlaid: one series per job on each chart.
    legend = page.locator('.compare-chart[data-key="d_loss"] .u-legend')
    expect(legend).to_contain_text("digits lr 1e-3")
    expect(legend).to_contain_text("digits lr 2e-4")
    expect(page.locator('.compare-chart[data-key="fid"] canvas')).to_have_count(1)
    # The configs' differences, highlighted; what is the same is hidden until asked for.
    expect(page.locator('#config-diff tr.differs[data-key="options.lr"]')).to_have_count(1)
    expect(page.locator('#config-diff tr.differs[data-key="sample_every"]')).to_have_count(1)
    expect(page.locator('#config-diff tr[data-key="variant"]')).to_have_count(0)
    page.locator("#slider").fill("9")
    _loaded(page, f'.grid-panel[data-job="{slow}"] img')
    _shot(world, page, "compare.png")
    page.uncheck("#only-diff")
    expect(page.locator('#config-diff tr[data-key="variant"]:not(.differs)')).to_have_count(1)


def test_workers_page_shows_who_runs_what(world, page):
    from playwright.sync_api import expect

    page.goto(f"{world['url']}/workers")
    busy = page.locator("#workers tbody tr.busy")
    expect(busy).to_have_count(1)
    expect(busy).to_contain_text("live ring8")
    expect(busy.locator("td").nth(0)).to_have_text(re.compile(r"\S+"))  # the host
    _shot(world, page, "workers.png")


def test_cancel_is_refused_without_the_token_and_cancels_with_it(world, page):
    from playwright.sync_api import expect

    store = world["store"]
    waiting = world["g"].submit("gan", "--data", "ring8", "--steps", "100", "--name", "waiting")
    page.goto(f"{world['url']}/jobs/{waiting}")
    expect(page.locator("#status")).to_have_text("queued")
    page.click("#cancel")
    result = page.locator("#action-result")
    expect(result).to_contain_text("cancel refused: actions need the dashboard's token")
    assert store.get_job(waiting).status == "queued"
    # The refusal opens the token form; with the token the same button cancels.
    page.fill("#token-input", TOKEN)
    page.click(".token-form button")
    page.click("#cancel")
    expect(result).to_contain_text("cancel: the job is cancelled")
    expect(page.locator("#status")).to_have_text("cancelled")  # told by the stream
    assert store.get_job(waiting).status == "cancelled"

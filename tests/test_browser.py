"""A real browser (Debian's chromium via Playwright) against an in-process launch of the app.

Opens the page at 1400 px, picks the three-date Sentinel-2 sample, runs identity + median, checks the results,
that every metrics column and the reference image are visible (not clipped, headers on one line), the
before/after slider, the advanced settings, and that a text file named .png is reported as soon as it is
uploaded and again as one toast on Run. The screenshot goes to the test's temporary folder; set
CLOUDRM_SCREENSHOT=assets/screenshot.png to refresh the README's on purpose. `.ci/run` installs chromium
(`apt-get install -y chromium`); where /usr/bin/chromium is absent the test skips and says so.
"""
from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_k, _v)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from app_helpers import REPO, running_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Where an element is cut off: its text's box (an image's own box) against every ancestor that clips (overflow other than visible)
# and the viewport's width; and how many lines its text takes (a header wrapped as "BRISQU E" takes two).
CLIP_JS = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const text = el.textContent.trim() !== '';
  const r = text ? range.getBoundingClientRect() : el.getBoundingClientRect();  // an image: its own box
  const lines = new Set([...range.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top))).size;
  const cut = [];
  if (r.right > window.innerWidth + 1 || r.left < -1) cut.push('viewport');
  for (let a = el.parentElement; a; a = a.parentElement) {
    const st = getComputedStyle(a);
    if (st.overflowX === 'visible' && st.overflowY === 'visible') continue;
    const b = a.getBoundingClientRect();
    if (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1 || r.bottom > b.bottom + 1)
      cut.push(a.tagName + '.' + (a.className || '').toString().slice(0, 40));
  }
  const ellipsis = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).textOverflow === 'ellipsis';
  return {lines, cut, ellipsis, text: el.textContent.trim()};
}"""

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; "
                              f".ci/run does it) to run the browser test"),
]


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with running_app() as (app, url), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1100})
            pg.set_default_timeout(30_000)
            pg.goto(url)
            yield pg
        finally:
            browser.close()


def _visible_whole(locator) -> dict:
    info = locator.evaluate(CLIP_JS)
    assert not info["cut"] and not info["ellipsis"], info
    return info


def test_sample_run_slider_advanced_error_screenshot(page, tmp_path):
    from playwright.sync_api import expect

    # the reference upload box shows its whole prompt
    _visible_whole(page.locator("#reference").get_by_text("Click to Upload").first)

    # pick a sample: a three-date Sentinel-2 scene
    thumbs = page.locator("#samples_sentinel2 .thumbnail-item")
    expect(thumbs.first).to_be_visible(timeout=30_000)  # filled on page load
    for gal in page.locator(".sample-gallery").all():  # every thumbnail and its whole caption
        for cap in gal.locator(".caption-label").all():
            _visible_whole(cap)
        for img in gal.locator(".thumbnail-item img").all():
            _visible_whole(img)
    thumbs.filter(has_text="3 dates").last.click()  # a three-date scene (built-in ones exist offline)
    expect(page.locator("#sample_note")).to_contain_text("weights variant set to")
    expect(page.locator("#sample_note")).to_contain_text("methods to median")  # the group's preset
    expect(page.locator("#sample_note")).to_contain_text("dates 2 and 3 are the clear date")  # its notes
    expect(page.locator("#dates")).to_contain_text("cloudy_2")
    _visible_whole(page.locator("#dates").get_by_text("cloudy_2").first)  # the third date's row is not hidden
    expect(page.locator("#reference")).to_contain_text("reference_")

    # two methods: identity + median
    for name in ("identity", "median"):
        box = page.locator(f"#methods input[name='{name}']")
        if not box.is_checked():
            box.check()
    for other in page.locator("#methods input[type=checkbox]").all():
        if other.get_attribute("name") not in ("identity", "median") and other.is_checked():
            other.uncheck()

    page.locator("#run").click()
    metrics = page.locator("#metrics")
    expect(metrics).to_contain_text("median", timeout=60_000)
    expect(metrics).to_contain_text("identity")
    expect(metrics.locator("[role=row][data-index]")).to_have_count(2)  # data rows (the grid is virtual)
    assert "PSNR" in metrics.inner_text()
    names = [metrics.locator(f"[data-testid=cell-{r}-0]").inner_text().strip() for r in range(2)]
    assert names == ["identity", "median"]
    for r in range(2):  # a reference came with the sample: PSNR and SSIM are numbers
        psnr = float(metrics.locator(f"[data-testid=cell-{r}-2]").inner_text())
        ssim = float(metrics.locator(f"[data-testid=cell-{r}-3]").inner_text())
        assert 5 < psnr < 100 and 0 < ssim <= 1

    # every metrics column: header inside the table's visible area, on one line; its first cell too
    for c, name in enumerate(["method", "settings", "PSNR (dB)", "SSIM", "RMSE", "NIQE", "BRISQUE", "seconds"]):
        header = metrics.get_by_text(name, exact=True).first
        info = _visible_whole(header)
        assert info["lines"] == 1, info
        _visible_whole(metrics.locator(f"[data-testid=cell-0-{c}]"))

    # the results gallery: 3 dates + 2 methods + reference, the reference not cut off
    expect(page.locator("#results .thumbnail-item")).to_have_count(6)
    ref_item = page.locator("#results .thumbnail-item").last
    expect(ref_item).to_contain_text("reference")
    _visible_whole(ref_item.locator("img"))
    expect(page.locator("#slider img")).to_have_count(2)
    page.get_by_role("radio", name="identity").click()
    expect(page.locator("#slider img")).to_have_count(2)
    expect(page.locator("#downloads")).to_contain_text("_median")
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    if os.environ.get("CLOUDRM_SCREENSHOT"):  # refresh the README's screenshot on purpose
        page.screenshot(path=str(REPO / os.environ["CLOUDRM_SCREENSHOT"]), full_page=True)

    # advanced settings: closed at first, then change the DiffCR steps
    page.locator("#advanced button.label-wrap").click()
    steps = page.locator("#diffcr_steps input[data-testid=number-input]")
    expect(steps).to_be_visible()
    # The accordion mounts its children lazily; on a slow machine the first fill can land before the slider's
    # initial value is applied and be overwritten. Type again until the value holds, then check it held.
    for _ in range(5):
        steps.fill("7")
        steps.press("Tab")  # blur: the slider clamps and commits the typed value
        page.wait_for_timeout(400)
        if steps.input_value() == "7":
            break
    expect(steps).to_have_value("7")
    expect(page.locator("#diffcr_steps input[data-testid=range-input]")).to_have_value("7")
    page.get_by_role("radio", name="DDIM").first.click()

    # an upload that is not an image: a one-line error toast, and the page stays usable
    bad = tmp_path / "not_an_image.png"
    bad.write_text("plain text, not a picture\n")
    page.locator("#dates").get_by_role("button", name="Clear").click()  # uploads add to the list otherwise
    expect(page.locator("#dates")).not_to_contain_text("cloudy_0")
    page.locator("#dates input[type=file]").set_input_files(str(bad))
    expect(page.locator("#dates")).to_contain_text("not_an_image")
    status = page.locator("#input_status")  # said at upload time, in one place
    expect(status).to_contain_text("not a readable image")
    assert "\n" not in status.inner_text().strip() and "/tmp/" not in status.inner_text()
    page.locator("#run").click()
    toast = page.locator("[data-testid=toast-text]")
    expect(toast.first).to_contain_text("not a readable image", timeout=30_000)
    assert "\n" not in toast.first.inner_text().strip()
    assert "/tmp/" not in toast.first.inner_text()

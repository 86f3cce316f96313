"""End to end in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``)
driven by Selenium against ``blindinpaint serve`` running in a thread.

Open the page, upload an image, wait for the detected overlay, paint a brush stroke, restore,
download the result and the mask, and check the result differs from the input only inside the
mask (which holds the detection plus the stroke).  Set ``BLINDINPAINT_SCREENSHOT=PATH`` to save
a screenshot of the page after the restoration (docs/serve_screenshot.png is made that way).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
pytest.importorskip("selenium", reason="selenium is not installed (test extra)")
import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from blindinpaint.api import Restorer  # noqa: E402
from blindinpaint.serve.app import create_app  # noqa: E402

from test_serve import corrupted_image, make_exports  # noqa: E402

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)
CHROMEDRIVER = next((p for p in (os.environ.get("CHROMEDRIVER"), shutil.which("chromedriver"),
                                 "/usr/lib/chromium/chromedriver") if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="no Chromium installed (apt-get install -y chromium chromium-driver)")
WIDTH, HEIGHT, BRUSH = 160, 120, 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on 127.0.0.1:<free port> in a thread; yields (base URL, restorer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    exports = make_exports(tmp_path_factory.mktemp("browser_exports"))
    restorer = Restorer.from_pretrained(exports["hcl"], device="cpu")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model=restorer, inpaint_model=exports["gdn"], device="cpu"),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", restorer
    server.should_exit = True
    thread.join(timeout=10)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--window-size=1366,768", f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for_state(driver, state: str, timeout: float = 30.0) -> None:
    def reached(d):
        current = d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        status = d.find_element(By.ID, "status")
        if "error" in (status.get_attribute("class") or ""):
            raise AssertionError(f"the page reported an error: {status.text}")
        return current == state
    WebDriverWait(driver, timeout).until(reached)


def canvas_pixels(driver) -> np.ndarray:
    url = driver.execute_script("return document.getElementById('view').toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def wait_for_file(folder: Path, name: str, timeout: float = 20.0) -> Path:
    path, deadline = folder / name, time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0 and not list(folder.glob("*.crdownload"))):
        assert time.monotonic() < deadline, f"{name} was not downloaded; folder holds {os.listdir(folder)}"
        time.sleep(0.1)
    return path


def test_open_detect_paint_restore_download(served, browser, tmp_path):
    url, restorer = served
    rgb = corrupted_image(WIDTH, HEIGHT, seed=5)
    image_path = tmp_path / "example.png"
    Image.fromarray(rgb).save(image_path)
    detected = restorer.detect(rgb).mask
    assert detected.any() and not detected.all()

    browser.get(url + "/")
    WebDriverWait(browser, 20).until(lambda d: "ok" in d.find_element(By.ID, "model-status").get_attribute("class"))
    browser.find_element(By.ID, "file-input").send_keys(str(image_path))
    wait_for_state(browser, "detected")

    # the overlay: detected pixels are tinted red at 50 %, the others shown as they are
    shown = canvas_pixels(browser).astype(int)
    assert shown.shape == rgb.shape
    tint = np.rint(0.5 * rgb + 0.5 * np.array([255, 48, 72])).astype(int)
    assert np.abs(shown[detected] - tint[detected]).max() <= 2
    assert np.abs(shown[~detected] - rgb[~detected]).max() <= 1

    # paint a horizontal stroke across rows the detection left valid
    row = int(np.argmin(detected.sum(axis=1)[10:-10])) + 10
    x0, x1 = 20, WIDTH - 20
    canvas = browser.find_element(By.ID, "view")
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    scale = rect[0] / WIDTH
    browser.execute_script("const s = document.getElementById('brush-size'); s.value = arguments[0];"
                           "s.dispatchEvent(new Event('input'));", BRUSH)

    def to_offset(x: int, y: int) -> tuple[int, int]:
        """Image pixel centre -> Selenium's offset from the canvas centre (CSS pixels)."""
        return int(round((x + 0.5) * scale - rect[0] / 2)), int(round((y + 0.5) * scale - rect[1] / 2))

    start, end = to_offset(x0, row), to_offset(x1, row)
    (ActionChains(browser).move_to_element_with_offset(canvas, *start).click_and_hold()
     .move_to_element_with_offset(canvas, (start[0] + end[0]) // 2, end[1])
     .move_to_element_with_offset(canvas, *end).release().perform())
    painted = canvas_pixels(browser).astype(int)
    assert np.abs(painted[row, x0 + 2: x1 - 2] - tint[row, x0 + 2: x1 - 2]).max() <= 2, "the stroke must show"

    browser.find_element(By.ID, "restore").click()
    wait_for_state(browser, "restored")
    screenshot = os.environ.get("BLINDINPAINT_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)

    browser.find_element(By.ID, "download-result").click()
    browser.find_element(By.ID, "download-mask").click()
    result = np.asarray(Image.open(wait_for_file(browser.downloads, "example_restored.png")))
    mask = np.asarray(Image.open(wait_for_file(browser.downloads, "example_mask.png"))) == 255

    assert result.shape == rgb.shape and mask.shape == detected.shape
    assert np.array_equal(result[~mask], rgb[~mask]), "pixels outside the mask must be untouched"
    assert np.any(result[mask] != rgb[mask])
    assert (mask & detected).sum() == detected.sum(), "the detection is kept"
    assert mask[row, x0 + 2: x1 - 2].all(), "the stroke is part of the restored mask"
    added_rows = np.nonzero((mask & ~detected).any(axis=1))[0]
    assert added_rows.min() >= row - BRUSH // 2 - 1 and added_rows.max() <= row + BRUSH // 2 + 1
    changed = np.any(result != rgb, axis=2)
    assert changed[row, x0 + 2: x1 - 2].mean() > 0.5, "the stroke's pixels were restored"

    # undo removes the stroke from the mask again (Ctrl+Z)
    browser.find_element(By.ID, "view-mask").click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    undone = canvas_pixels(browser).astype(int)
    valid = ~detected[row, x0 + 2: x1 - 2]
    assert valid.any()
    assert np.abs(undone[row, x0 + 2: x1 - 2][valid] - rgb[row, x0 + 2: x1 - 2][valid]).max() <= 1

    # the GDN detector's artifact map of the restored image
    browser.find_element(By.ID, "inspect").click()
    WebDriverWait(browser, 30).until(lambda d: "Artifact map" in d.find_element(By.ID, "status").text)
    assert "active" in browser.find_element(By.ID, "view-artifacts").get_attribute("class")
    heat = canvas_pixels(browser)
    assert heat.shape == rgb.shape and not np.array_equal(heat, rgb)


# ----------------------------------------------------------------------------- screenshot for the docs
def _screenshot_main() -> None:
    """``python tests/test_serve_browser.py --model RUN --photo JPG -o docs/serve_screenshot.png``:
    corrupt the photo (seeded), open it in the page, paint one correction stroke, restore, and
    save a 1366 x 768 screenshot of the page."""
    import argparse
    import tempfile

    from blindinpaint.data.corruptions import corrupt
    from blindinpaint.data.masks import make_rng

    parser = argparse.ArgumentParser(description=_screenshot_main.__doc__)
    parser.add_argument("--model", required=True, help="HCL export folder or run directory")
    parser.add_argument("--photo", required=True)
    parser.add_argument("--pattern", default="constant")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    photo = Image.open(args.photo).convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    clean = np.asarray(photo.crop((left, top, left + side, top + side)).resize((args.size, args.size), Image.LANCZOS))
    corrupted = corrupt(clean, args.pattern, "0-30", make_rng(args.seed, "serve-screenshot")).image
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.png"
        Image.fromarray(corrupted).save(path)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(model=args.model, device="cpu"), host="127.0.0.1",
                                               port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--window-size=1366,768", "--hide-scrollbars", f"--user-data-dir={tmp}/profile"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            status = (By.ID, "model-status")
            WebDriverWait(driver, 20).until(lambda d: "ok" in d.find_element(*status).get_attribute("class"))
            driver.find_element(By.ID, "file-input").send_keys(str(path))
            wait_for_state(driver, "detected", timeout=300)
            canvas = driver.find_element(By.ID, "view")
            width = driver.execute_script("return arguments[0].getBoundingClientRect().width;", canvas)
            (ActionChains(driver).move_to_element_with_offset(canvas, int(-0.3 * width), int(0.35 * width))
             .click_and_hold().move_by_offset(int(0.15 * width), -int(0.05 * width)).release().perform())
            driver.find_element(By.ID, "restore").click()
            wait_for_state(driver, "restored", timeout=300)
            driver.execute_script("const s = document.getElementById('compare'); s.value = 0.55;"
                                  "s.dispatchEvent(new Event('input'));")
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
            server.should_exit = True
            thread.join(timeout=10)
    print(args.out)


if __name__ == "__main__":
    _screenshot_main()

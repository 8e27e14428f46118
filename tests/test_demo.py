"""The demo page, served by the real `segdiff demo` on the bundled model: driven in headless
Chromium like a person would, and through Gradio's Python client like a script would.

Set SEGDIFF_DEMO_SCREENSHOT=docs/demo.png to have the browser test save the README's picture.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "segdiff" / "assets" / "examples" / "shapes.png"
CLASSES = ["background", "circle", "square", "triangle"]
SHAPES = ["background", "circle", "square", "triangle", "star", "ring", "cross"]
NETWORK_MARK = "NETWORK ACCESS"
# Runs `segdiff demo` with an audit hook that reports any name lookup or connection to a
# host other than this machine: the page must work on a machine without network.
SERVE_AND_WATCH_NETWORK = f"""
import sys
LOCAL = {{"127.0.0.1", "localhost", "::1"}}
def watch(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    host = host.decode() if isinstance(host, bytes) else host
    if host is not None and host not in LOCAL:
        print("{NETWORK_MARK}:", event, host, file=sys.stderr, flush=True)
sys.addaudithook(watch)
from segdiff.cli import main
sys.argv = ["segdiff", *sys.argv[1:]]
main()
"""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`segdiff demo` on the bundled model at a free localhost port: (url, log path)."""
    folder = tmp_path_factory.mktemp("demo-server")
    log = folder / "server.log"
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio")}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE_AND_WATCH_NETWORK, "demo", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"segdiff demo exited with {process.returncode}:\n{log.read_text()}")
            try:
                if opener.open(url, timeout=5).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"segdiff demo did not answer in 180 s:\n{log.read_text()}")
                time.sleep(0.5)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system's packages (never a downloaded browser)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(
            "no Chromium with chromedriver on this machine (Debian: apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory(prefix="segdiff-chromium-") as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


def _open_page(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#segment"))


def _upload(driver, image):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(image))
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))


def _type_classes(driver, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#classes textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def _wait_for_table(driver, names):
    """Click Segment and wait until the class table lists ``names``; returns its text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, "#segment").click()
    table = driver.find_element(By.CSS_SELECTOR, "#class-table")
    WebDriverWait(driver, 120).until(lambda d: all(name in table.text for name in names))
    return table.text


def _image_width(driver, elem_id):
    script = (
        f"const img = document.querySelector('#{elem_id} img');"
        "return img && img.complete ? img.naturalWidth : 0;"
    )
    return driver.execute_script(script)


def test_page_segments_the_example_in_a_browser(server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    _open_page(browser, url)
    _upload(browser, EXAMPLE)
    _type_classes(browser, ", ".join(CLASSES))
    table = _wait_for_table(browser, CLASSES)
    rows = table.splitlines()
    for name in CLASSES:
        assert any(row.startswith(name) for row in rows), table
    assert "star" not in table  # only the classes asked for, plus "(none)"
    WebDriverWait(browser, 30).until(lambda d: _image_width(d, "overlay") > 0)
    assert _image_width(browser, "overlay") > 96  # the 96 px image plus its legend
    assert _image_width(browser, "labels") == 96
    if target := os.environ.get("SEGDIFF_DEMO_SCREENSHOT"):
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(target)
        Image.open(target).convert("RGB").quantize(64).save(target, optimize=True)


def test_page_shows_a_bad_class_list_and_keeps_working(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    _open_page(browser, url)
    browser.find_element(By.CSS_SELECTOR, "#examples tbody td").click()  # the bundled example
    box = browser.find_element(By.CSS_SELECTOR, "#classes textarea")
    WebDriverWait(browser, 30).until(lambda d: box.get_attribute("value") == ", ".join(CLASSES))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))
    _type_classes(browser, "circle, square, circle")
    browser.find_element(By.CSS_SELECTOR, "#segment").click()
    body = browser.find_element(By.TAG_NAME, "body")
    message = "names these classes twice: 'circle' and 'circle'"  # as `segdiff infer`
    WebDriverWait(browser, 60).until(lambda d: message in body.text)
    browser.find_element(By.XPATH, "//button[normalize-space()='shapes']").click()
    WebDriverWait(browser, 10).until(lambda d: box.get_attribute("value") == "shapes")
    _wait_for_table(browser, SHAPES)


def test_segmenter_reports_progress_and_keeps_only_the_latest_files(tiny_pipeline, tmp_path):
    from segdiff.demo import Segmenter

    segment = Segmenter(tiny_pipeline)
    stages = []

    def progress(fraction, desc):
        stages.append((fraction, desc))

    image = {"path": str(EXAMPLE), "orig_name": "first.png"}
    *_, first = segment(image, "a, b", 1, 2, 32, 0, progress=progress)
    assert [fraction for fraction, _ in stages] == [0.0, 0.1, 0.9]
    assert stages[1][1] == "segmenting: 2 runs of 1 steps"
    *_, table, second = segment({**image, "orig_name": "second.png"}, "a", 1, 1, 32, 0, progress)
    assert [Path(file).name for file in second] == [  # one member: no uncertainty
        "second_labels.png", "second_overlay.png", "second.json"
    ]  # fmt: skip
    assert not any(Path(file).exists() for file in first)  # Gradio has its own copies
    assert [row[0] for row in table] == ["a", "(none)"]


def test_segmenter_says_what_to_lower_when_memory_runs_out(tiny_pipeline, monkeypatch):
    import gradio as gr
    import torch

    from segdiff.demo import Segmenter

    def run_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(type(tiny_pipeline), "__call__", run_out)
    segment = Segmenter(tiny_pipeline)
    image = {"path": str(EXAMPLE), "orig_name": "big.png"}
    with pytest.raises(gr.Error, match="out of memory .*Lower the processing resolution"):
        segment(image, "a, b", 1, 2, 32, 0, progress=lambda *args, **kwargs: None)


def _predict(url, image, classes, steps=1, members=2, resolution=64, seed=3):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.predict(
        handle_file(str(image)), classes, steps, members, resolution, seed, api_name="/segment"
    )


def test_client_gets_the_labels_segdiff_infer_writes(server, tmp_path):
    url, _ = server
    *_, table, files = _predict(url, EXAMPLE, ", ".join(CLASSES))
    page = {Path(file).name: Path(file) for file in files}
    assert sorted(page) == ["shapes.json", "shapes_labels.png", "shapes_overlay.png",
                            "shapes_uncertainty.png", "shapes_uncertainty_color.png"]  # fmt: skip
    out = tmp_path / "infer"
    options = ["--denoise-steps", "1", "--ensemble-size", "2", "--processing-res", "64"]
    result = CliRunner().invoke(
        app, ["infer", str(EXAMPLE), "-c", ",".join(CLASSES), "-o", str(out), *options,
              "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in sorted(page):
        if name.endswith(".json"):
            continue
        assert np.array_equal(
            np.asarray(Image.open(page[name])), np.asarray(Image.open(out / name))
        ), name
    from_page = json.loads(page["shapes.json"].read_text())
    from_infer = json.loads((out / "shapes.json").read_text())
    assert from_page.pop("input") == "shapes.png"
    from_infer.pop("input")
    assert from_page == from_infer
    shares = {row[0]: row[1] for row in table["data"]}
    assert list(shares) == [*CLASSES, "(none)"]
    for name in CLASSES:
        assert shares[name] == pytest.approx(100 * from_infer["fractions"][name], abs=0.01)


def test_client_gets_the_cli_messages_for_bad_input(server, tmp_path):
    from gradio_client.exceptions import AppError

    url, _ = server
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    names = tmp_path / "names.txt"
    names.write_text("secret\nlines\n")
    with pytest.raises(AppError, match=r"cannot read image corrupt\.png"):
        _predict(url, corrupt, "a, b")
    with pytest.raises(AppError, match="the class list has an empty name"):
        _predict(url, EXAMPLE, "")
    with pytest.raises(AppError, match="ensemble size must be a whole number of at least 1"):
        _predict(url, EXAMPLE, "a, b", members=0)
    with pytest.raises(AppError, match="seed must be a whole number of at least 0, got 1.5"):
        _predict(url, EXAMPLE, "a, b", seed=1.5)
    # A near miss: a path typed as the class list is refused as `segdiff infer` refuses a
    # missing class file, but the server never reads files named by strangers.
    with pytest.raises(AppError, match="looks like a class file") as refused:
        _predict(url, EXAMPLE, str(names))
    assert "secret" not in str(refused.value)
    with pytest.raises(AppError, match="did you mean ade150"):
        _predict(url, EXAMPLE, "ade15")


def test_two_users_at_once_get_their_own_results(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    requests = {"one": "circle, square", "two": "star"}
    jobs = {}
    for stem, classes in requests.items():
        shutil.copy(EXAMPLE, tmp_path / f"{stem}.png")
        client = Client(url, verbose=False)
        image = handle_file(str(tmp_path / f"{stem}.png"))
        jobs[stem] = client.submit(image, classes, 1, 2, 64, 0, api_name="/segment")
    for stem, job in jobs.items():
        *_, table, files = job.result(timeout=120)
        assert [row[0] for row in table["data"]] == [*requests[stem].split(", "), "(none)"]
        record = json.loads(Path(files[-1]).read_text())
        assert record["input"] == f"{stem}.png"
        assert record["classes"] == requests[stem].split(", ")
        assert all(Path(file).is_file() for file in files)


def test_server_never_reached_past_localhost(server):
    url, log = server
    _predict(url, EXAMPLE, "circle")
    assert NETWORK_MARK not in log.read_text(), log.read_text()

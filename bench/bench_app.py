"""App: time from `streamlit run` to the first prediction shown in Chromium, and a slider rerun.

    python -m bench.bench_app

Uses an untrained model of the real architecture (timings do not depend on the weights) and a real
X-ray from ../shared/data/cxr3 when present. Needs Debian's Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench.common import CXR3, machine
from tests.factories import CHROMIUM_ARGS, free_port, start_app


def _prepare(base: Path) -> tuple[Path, Path]:
    from radiology.model import ModelMetadata, build_model, save_model
    from radiology.registry import load_run, set_active

    runs = base / "runs"
    run = runs / "bench-model"
    save_model(build_model(weights="none"), run / "model.keras", ModelMetadata(name="bench"))
    (run / "status.json").write_text(json.dumps({"state": "succeeded"}))
    set_active(load_run(run), runs)
    image = next(CXR3.glob("covid/*.jpg"), None) if CXR3.is_dir() else None
    if image is None:
        from tests.factories import png_bytes, xray

        image = base / "xray.png"
        image.write_bytes(png_bytes(xray(size=(1024, 1024))))
    return runs, image


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        runs, image = _prepare(base)
        port = free_port()
        env = {**os.environ, "RADIOLOGY_RUNS_DIR": str(runs), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(180_000)
            start = time.perf_counter()
            server = start_app(port, env)
            try:
                t_server = time.perf_counter() - start
                page.goto(f"http://127.0.0.1:{port}/Classify")
                page.locator("input[type=file]").set_input_files(str(image))
                page.get_by_role("heading", name=f"{image.name}:").wait_for()
                t_first = time.perf_counter() - start
                computed = page.get_by_text("computed in").first.inner_text()
                slider = page.get_by_role("slider").first
                slider.focus()
                start = time.perf_counter()
                page.keyboard.press("ArrowRight")
                expect(page.get_by_text("from cache: no model call")).to_have_count(1)
                expect(slider).to_have_attribute("aria-valuetext", "0.45")
                t_slider = time.perf_counter() - start
            finally:
                server.terminate()
                server.wait(10)
                browser.close()
    print(f"image: {image.name}")
    print(f"  streamlit run -> server healthy            {t_server:6.1f} s")
    print(
        f"  streamlit run -> first prediction shown    {t_first:6.1f} s   (first model load and Grad-CAM: {computed})"
    )
    print(f"  slider moved -> overlay re-rendered        {t_slider:6.2f} s   (from cache, no model call)")


if __name__ == "__main__":
    main()

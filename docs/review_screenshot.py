"""Writes docs/review-page.png: the review page at / of the shipped bundle, after scoring a defective and a good
wood part from ../shared/data in headless chromium (Debian: apt-get install chromium).

    python docs/review_screenshot.py [--out docs/review-page.png] [--colors 96]

The PNG is reduced to a palette of ``--colors`` colours so README's picture stays small (under 150 KB).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test helpers start the service and drive chromium

from tests.fixtures.real_data import SHARED_DATA, SHIPPED_STORE  # noqa: E402
from tests.ops.browser import headless_chromium, score_on_review_page  # noqa: E402
from tests.ops.live import running_service, service_env  # noqa: E402
from tests.ops.support import free_port  # noqa: E402

IMAGES = ("wood/test/defect/100000007.jpg", "wood/test/good/100.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "review-page.png")
    parser.add_argument("--colors", type=int, default=96)
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    env = service_env(REPO / SHIPPED_STORE, free_port(), providers="CPUExecutionProvider", warmup_runs="1")
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        with running_service(env, workdir / "service.log") as url, headless_chromium(chromium, workdir) as page:
            verdicts = score_on_review_page(page, url, [SHARED_DATA / name for name in IMAGES])
            shot = page.screenshot(args.width, args.height)
    image = Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {image.width}x{image.height}, {args.out.stat().st_size // 1024} KB, verdicts {verdicts}")


if __name__ == "__main__":
    main()

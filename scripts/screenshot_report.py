"""Write the report of a store and photograph its HTML page in headless Chromium.

Run: python scripts/screenshot_report.py [--store cache.db] [--out report]
Needs `chromium` (Debian: apt-get install chromium). Prints the screenshot's path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from ger_replay import report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="cache.db")
    parser.add_argument("--out", default="report")
    parser.add_argument("--height", type=int, default=4000)
    options = parser.parse_args()
    out = Path(options.out).resolve()
    report.write(options.store, out)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    shot = out / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--hide-scrollbars",
                    f"--window-size=1400,{options.height}", f"--screenshot={shot}",
                    (out / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    print(shot)


if __name__ == "__main__":
    main()

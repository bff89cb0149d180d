"""Render docs/img/homeassistant-card.png: what Home Assistant shows for a crackd device.

A mock-up in Home Assistant's card style, filled the way HA fills it: the entity names and
units come from crackd's discovery configs (edge.outputs.homeassistant), the values from rendering
their value_templates with Jinja2 against real payloads (an event built from `crackd infer`
on a photograph, the stats example of docs/mqtt.md), and the picture is the overlay crackd
publishes on the snapshot topic. Needs jinja2 and a headless Chromium (`apt-get install chromium`).

    python tools/ha_card.py --image ../shared/data/sut_seg/images/103.jpg --out docs/img/homeassistant-card.png
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2.sandbox

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.config import config_from_dict  # noqa: E402
from edge.outputs.homeassistant import entities  # noqa: E402


def doc_example(topic: str) -> dict:
    text = (REPO / "docs" / "mqtt.md").read_text()
    block = re.search(rf"### `crackd/[^/]+/{topic}`.*?```json\n(.*?)```", text, flags=re.S)
    if block is None:
        raise SystemExit(f"docs/mqtt.md: no JSON example under a `crackd/<device>/{topic}` heading")
    return json.loads(block.group(1))


def infer(image: Path, mm_per_pixel: float, overlay_dir: Path) -> dict:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "infer",
            "--json",
            "--mm-per-pixel",
            str(mm_per_pixel),
            "--overlay",
            str(overlay_dir),
            str(image),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(run.stdout.splitlines()[-1])


def card_html(rows: list[tuple[str, str]], overlay_jpeg: bytes, device: str, crack_on: bool) -> str:
    picture = base64.b64encode(overlay_jpeg).decode()
    items = "\n".join(
        f'<div class="row"><span class="name">{html.escape(n)}</span><span class="state">{html.escape(v)}</span></div>'
        for n, v in rows
    )
    badge = '<span class="badge on">Detected</span>' if crack_on else '<span class="badge">Clear</span>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #fafafa; font-family: Roboto, 'DejaVu Sans', sans-serif; }}
.card {{ width: 380px; margin: 16px; background: #fff; border-radius: 12px;
         box-shadow: 0 2px 6px rgba(0,0,0,.15); overflow: hidden; }}
.card h1 {{ font-size: 20px; font-weight: 400; margin: 0; padding: 16px 16px 8px; color: #212121; }}
.card img {{ width: 100%; display: block; }}
.caption {{ padding: 6px 16px; font-size: 12px; color: #727272; }}
.row {{ display: flex; justify-content: space-between; padding: 9px 16px; font-size: 14px; color: #212121;
        border-top: 1px solid #eee; }}
.name {{ color: #212121; }} .state {{ color: #444; }}
.badge {{ background: #43a047; color: #fff; border-radius: 10px; padding: 1px 9px; font-size: 13px; }}
.badge.on {{ background: #db4437; }}
</style></head><body><div class="card">
<h1>{html.escape(device)}</h1>
<img src="data:image/jpeg;base64,{picture}">
<div class="caption">Crack snapshot</div>
<div class="row"><span class="name">Crack</span>{badge}</div>
{items}
</div></body></html>"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="photograph with a crack")
    parser.add_argument("--mm-per-pixel", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "homeassistant-card.png")
    args = parser.parse_args()
    cfg = config_from_dict({"device_id": "line3-cam1", "model": {"mm_per_pixel": args.mm_per_pixel}})
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    with tempfile.TemporaryDirectory() as tmp:
        result = infer(args.image, args.mm_per_pixel, Path(tmp))
        overlay = next(Path(tmp).glob("*.jpg")).read_bytes()
        event = dict(
            doc_example("event"),
            type="start",
            revision=0,
            ended_at=None,
            end_reason=None,
            score=result["score"],
            measurements=result["measurements"],
        )
        payloads = {
            cfg.topic("event"): event,
            cfg.topic("stats"): doc_example("stats"),
            cfg.topic("status"): doc_example("status"),
        }
        rows = []
        for e in entities(cfg):
            if e.component != "sensor":
                continue
            c = e.config
            value = env.from_string(c["value_template"]).render(value_json=payloads[c["state_topic"]]).strip()
            if "suggested_display_precision" in c and value != "null":
                value = f"{float(value):.{c['suggested_display_precision']}f}"
            rows.append((c["name"], f"{value} {c.get('unit_of_measurement', '')}".strip()))
        page = Path(tmp) / "card.html"
        page.write_text(card_html(rows, overlay, cfg.device_id, event["type"] != "end"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={args.out.resolve()}",
                "--window-size=412,806",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

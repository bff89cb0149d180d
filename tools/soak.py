#!/usr/bin/env python3
"""Soak / throughput check of the daemon against the issue's targets.

Measures, on this machine:
  1. engine-only frame rate: Cascade.process on in-memory frames (what `crackd bench` times),
  2. the full daemon (`crackd run`, a child process): folder source replaying the same frames as
     fast as the pipeline takes them, journal on, MQTT on (a mosquitto started here, or --broker),
  3. the daemon's RSS at the start (after warm-up) and the end of the run, sampled every 5 s.
The engine-only rate is measured before and after the daemon run and averaged (background load drifts).

    .venv/bin/python tools/soak.py --duration 60
    .venv/bin/python tools/soak.py --duration 1200 --size 640x480 --record-frames all   # the 20-minute soak

Targets (issue 4): daemon >= 90 % of the engine-only rate; steady RSS <= 150 MB with no growth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python tools/soak.py`, Python puts tools/ on sys.path, not the repository root: add it so that `edge`
# (the daemon measured) and `tests.helpers` (the free port and status.json reading the tests use) import.
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.vocabulary import RUNTIME_CHOICES, SEGMENT_MODES, SegmentMode  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402
from tests.helpers.status import read_status  # noqa: E402


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def make_frames(folder: Path, n: int, width: int, height: int, fmt: str, seed: int) -> list[np.ndarray]:
    from edge.sources.synth import generate

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        rgb = generate(rng, height, width, crack_probability=0.5).image
        path = folder / f"frame_{i:04d}.{fmt}"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written = cv2.imread(str(path))  # as the daemon will see it (lossy formats included)
        if written is None:
            raise SystemExit(f"{path}: the frame just written cannot be read back")
        frames.append(cv2.cvtColor(written, cv2.COLOR_BGR2RGB))
    return frames


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_only(
    bundle: Path, frames: list[np.ndarray], seconds: float, threads: int, segment: SegmentMode, runtime: str
) -> tuple[float, float]:
    """(frames per wall second, CPU ms per frame) of Cascade.process alone."""
    from edge.engine.bundle import load_bundle
    from edge.engine.cascade import Cascade

    cascade = Cascade(load_bundle(bundle, runtime=runtime, threads=threads), segment=segment)
    for f in frames[:10]:
        cascade.process(f)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        cascade.process(frames[n % len(frames)])
        n += 1
    return n / (time.perf_counter() - t0), (time.process_time() - c0) * 1000 / n


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        + (f"user {os.environ.get('USER', 'root')}\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def plot_rss(samples: list[tuple[float, float | None]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(t / 60, r) for t, r in samples if r is not None]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in points], [r for _, r in points], lw=1)
    ax.set_xlabel("minutes after warm-up")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of daemon run measured (after --warmup)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--bundle", default=str(REPO / "models" / "default"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES)
    ap.add_argument("--segment", default="on-crack", choices=SEGMENT_MODES)
    ap.add_argument("--size", default="320x240", metavar="WxH", help="frame size of the generated folder")
    ap.add_argument("--frames", type=int, default=64, help="distinct frames in the folder (replayed in a loop)")
    ap.add_argument("--format", default="jpg", choices=["jpg", "png"])
    ap.add_argument(
        "--cache-mb", type=float, default=0.0, help="folder.cache_mb of the daemon (0: decode every file every time)"
    )
    ap.add_argument("--record-frames", default="cracks", choices=["all", "cracks", "none"])
    ap.add_argument("--broker", default=None, metavar="HOST:PORT", help="use this broker instead of starting mosquitto")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--source",
        default="folder",
        choices=["folder", "demo"],
        help=(
            "folder: replay generated files as fast as possible; "
            "demo: the `crackd run --demo` camera (synthetic, 10 fps)"
        ),
    )
    ap.add_argument("--rss-csv", default=None, metavar="FILE", help="write the RSS samples (seconds, MB) to this CSV")
    ap.add_argument("--plot", default=None, metavar="PNG", help="plot RSS over time to this PNG (matplotlib)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="crackd-soak-"))
    broker = None
    daemon = None
    try:
        frames = make_frames(work / "frames", args.frames, width, height, args.format, seed=0)
        engine_s = max(5.0, min(30.0, args.duration / 4))
        before = engine_only(Path(args.bundle), frames, engine_s, args.threads, args.segment, args.runtime)
        if args.broker:
            host, port = args.broker.rsplit(":", 1)
        else:
            broker, port = start_broker(work)
            host = "127.0.0.1"
        state = work / "state"
        config = {
            "device_id": "soak",
            "source": (
                {
                    "type": "folder",
                    "folder": {"path": str(work / "frames"), "fps": 0, "loop": True, "cache_mb": args.cache_mb},
                }
                if args.source == "folder"
                else {"type": "synthetic", "synthetic": {"fps": 10, "crack_probability": 0.3, "hold_frames": 8}}
            ),
            "model": {
                "bundle": str(Path(args.bundle).resolve()),
                "threads": args.threads,
                "segment": args.segment,
                "runtime": args.runtime,
            },
            "storage": {"state_dir": str(state), "record_frames": args.record_frames},
            "mqtt": {"enabled": True, "host": host, "port": int(port)},
            "logging": {"journald": False, "level": "warning"},
            "stats_interval_s": 10,
        }
        (work / "crackd.yaml").write_text(json.dumps(config))  # JSON is YAML
        log = open(work / "daemon.log", "wb")  # noqa: SIM115  (the daemon's output for the whole soak)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(work / "crackd.yaml")],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while not read_status(state).frames_processed and time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited: {(work / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(args.warmup)
        s0, t0, cpu0 = read_status(state), time.monotonic(), cpu_seconds(daemon.pid)
        samples = [(0.0, rss_mb(daemon.pid))]
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(5.0, args.duration - (time.monotonic() - t0)) if args.duration > 0 else 0)
            samples.append((time.monotonic() - t0, rss_mb(daemon.pid)))
            if daemon.poll() is not None:
                raise SystemExit(f"daemon died: {(work / 'daemon.log').read_text()[-2000:]}")
        time.sleep(1.1)  # let status.json catch up with the end of the window
        s1, t1, cpu1 = read_status(state), time.monotonic(), cpu_seconds(daemon.pid)
        done = s1.frames_processed - s0.frames_processed
        pipeline = done / (t1 - t0)
        daemon_cpu_ms = (cpu1 - cpu0) * 1000 / max(1, done)
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(60)
        after = engine_only(Path(args.bundle), frames, engine_s, args.threads, args.segment, args.runtime)
        final = read_status(state)
        engine = (before[0] + after[0]) / 2
        engine_cpu_ms = (before[1] + after[1]) / 2
        rss = [r for _, r in samples if r is not None]
        if args.rss_csv:
            Path(args.rss_csv).write_text(
                "seconds,rss_mb\n" + "".join(f"{t:.1f},{r:.2f}\n" for t, r in samples if r is not None)
            )
        if args.plot:
            plot_rss(samples, Path(args.plot), f"crackd soak ({args.source}, {args.duration:g} s)")
        half = len(rss) // 2
        report = {
            "bundle": final.bundle_version,
            "frame_size": [width, height],
            "segment": args.segment,
            "record_frames": args.record_frames,
            "folder_cache_mb": args.cache_mb,
            "duration_s": round(t1 - t0, 1),
            "engine_only_fps": round(engine, 1),
            "engine_only_fps_before_after": [round(before[0], 1), round(after[0], 1)],
            "pipeline_fps": round(pipeline, 1),
            "throughput_ratio": round(pipeline / engine, 3),
            "engine_cpu_ms_per_frame": round(engine_cpu_ms, 3),
            "daemon_cpu_ms_per_frame": round(daemon_cpu_ms, 3),
            "cpu_ratio": round(engine_cpu_ms / daemon_cpu_ms, 3),
            "frames_processed": final.frames_processed,
            "frames_skipped": final.frames_skipped,
            "frames_failed": final.frames_failed,
            "events": final.events_started,
            "outbox_depth_at_exit": final.outbox_depth,
            "latency_ms": dataclasses.asdict(final.latency_ms),
            "rss_mb_start": round(rss[0], 1) if rss else None,
            "rss_mb_end": round(rss[-1], 1) if rss else None,
            "rss_mb_max": round(max(rss), 1) if rss else None,
            "rss_mb_first_half_mean": round(float(np.mean(rss[:half])), 1) if half else None,
            "rss_mb_second_half_mean": round(float(np.mean(rss[half:])), 1) if half else None,
            "daemon_exit_code": rc,
        }
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(
                f"crackd soak: bundle {report['bundle']}, {width}x{height} {args.format}, "
                f"segment {args.segment}, record_frames {args.record_frames}, folder "
                f"cache {args.cache_mb:g} MB, {report['duration_s']} s measured"
            )
            print(
                f"  engine only             {report['engine_only_fps']:8.1f} frames/s  (before "
                f"{before[0]:.1f}, after {after[0]:.1f}); {engine_cpu_ms:.3f} CPU ms/frame"
            )
            print(
                f"  daemon (journal + MQTT) {report['pipeline_fps']:8.1f} frames/s  wall "
                f"ratio {report['throughput_ratio']:.1%}; {daemon_cpu_ms:.3f} CPU "
                f"ms/frame, CPU ratio {report['cpu_ratio']:.1%}  (target >= 90%)"
            )
            print(
                "  (wall ratios swing with other load on this machine; "
                "the CPU ratio is what a saturated single core would give)"
            )
            print(
                f"  frames {report['frames_processed']} processed, {report['frames_skipped']} "
                f"skipped, {report['frames_failed']} failed; {report['events']} events; outbox "
                f"at exit {report['outbox_depth_at_exit']}; latency {report['latency_ms']}"
            )
            print(
                f"  RSS  start {report['rss_mb_start']} MB, end {report['rss_mb_end']} MB, max "
                f"{report['rss_mb_max']} MB (means: first half {report['rss_mb_first_half_mean']}, "
                f"second half {report['rss_mb_second_half_mean']}; target <= 150 MB, no growth)"
            )
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Frame sources on real files (images, a video written with OpenCV); picamera2 against a small fake.

libcamera / picamera2 only exist on Raspberry Pi OS, so `Picamera2Source` is
tested against `FakePicamera2` below: a stand-in with the same methods crackd
calls (create_video_configuration, create_still_configuration, configure,
start, capture_arrays(wait=False) -> job, wait(job, timeout), stop, close) and
the same array layouts (lores YUV420 as an (H*3/2, W) I420 plane stack, RGB888
as B, G, R bytes). Everything else here is real.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edge.sources import (
    ADAPTERS,
    FolderSource,
    Frame,
    FrameSource,
    OpenCVSource,
    Picamera2Source,
    ResilientSource,
    SourceAdapter,
    SourceError,
    SourceExhausted,
    SourceFailed,
    SourceTimeout,
    SyntheticSource,
    adapter_for,
    make_source,
    yuv420_to_rgb,
)
from tests.helpers import write_frames
from tests.helpers.frames import damaged_video, huge_header_jpeg


def read_all(source, limit=100):
    frames = []
    source.open()
    try:
        for _ in range(limit):
            frames.append(source.read(1.0))
    except SourceExhausted:
        pass
    return frames


# --------------------------------------------------------------------------- folder


def test_folder_replays_files_in_name_order_as_rgb(tmp_path):
    write_frames(tmp_path, "C.C..")
    frames = read_all(FolderSource(tmp_path, fps=0, loop=False))
    assert [f.ref for f in frames] == [f"f{i:06d}.png" for i in range(5)]
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8


def test_folder_converts_bgr_files_to_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    (frame,) = read_all(FolderSource(tmp_path, fps=0, loop=False))
    assert tuple(frame.rgb[0, 0]) == (255, 0, 0)


def test_corrupt_files_are_counted_and_skipped(tmp_path):
    write_frames(tmp_path, "CX.X.")
    source = FolderSource(tmp_path, fps=0, loop=False)
    frames = read_all(source)
    assert [f.ref for f in frames] == ["f000000.png", "f000002.png", "f000004.png"]
    assert source.health.bad_frames == 2 and source.health.frames == 3


def test_folder_loops_and_paces_at_the_given_rate(tmp_path):
    write_frames(tmp_path, "C.")
    source = FolderSource(tmp_path, fps=50, loop=True)
    source.open()
    t0 = time.monotonic()
    refs = [source.read(1.0).ref for _ in range(10)]
    elapsed = time.monotonic() - t0
    assert refs == ["f000000.png", "f000001.png"] * 5
    assert 0.15 <= elapsed < 1.0  # 10 frames at 50 fps ~ 0.18 s
    assert not source.lossless and FolderSource(tmp_path, fps=0).lossless


def test_a_folder_of_only_corrupt_files_is_a_source_error(tmp_path):
    write_frames(tmp_path, "XX")
    source = FolderSource(tmp_path, fps=0, loop=True)
    source.open()
    with pytest.raises(SourceError, match="none of the 2 files"):
        source.read(1.0)


def test_a_missing_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="folder not found"):
        FolderSource(tmp_path / "nope").open()


# --------------------------------------------------------------------------- synthetic


def test_synthetic_frames_hold_a_scene_with_known_cracks():
    source = SyntheticSource(width=64, height=48, fps=0, crack_probability=1.0, hold_frames=3, seed=1)
    source.open()
    frames = [source.read(1.0) for _ in range(4)]
    assert all(f.rgb.shape == (48, 64, 3) for f in frames)
    assert source.last_has_crack and source.last_mask.max() == 255
    assert frames[0].ref == frames[1].ref == frames[2].ref  # one scene for hold_frames frames
    assert np.array_equal(np.roll(frames[0].rgb, 2, axis=1), frames[1].rgb)  # sliding past the camera


# --------------------------------------------------------------------------- opencv


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    assert writer.isOpened()
    for i in range(6):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[..., 2] = 200  # red
        bgr[:, i * 8 : i * 8 + 4] = 0
        writer.write(bgr)
    writer.release()
    return path


def test_opencv_reads_a_video_file_as_rgb_until_it_ends(video_file):
    source = OpenCVSource(url=str(video_file))
    frames = read_all(source)
    assert len(frames) == 6 and source.lossless
    r, g, b = frames[0].rgb[40, 60].astype(int)
    assert r > 150 and g < 60 and b < 60


def test_a_paced_video_file_is_known_lossy_before_it_is_opened(video_file):
    """The daemon decides between waiting for and dropping frames before the capture thread opens the source."""
    assert OpenCVSource(url=str(video_file)).lossless
    paced = OpenCVSource(url=str(video_file), fps=50.0)
    assert not paced.lossless and paced.pacer.period == pytest.approx(0.02)
    frames = read_all(paced)
    assert len(frames) == 6 and frames[-1].t - frames[0].t >= 5 * 0.02 * 0.9


def test_opencv_loops_a_video_file(video_file):
    source = OpenCVSource(url=str(video_file), loop=True)
    frames = read_all(source, limit=15)
    assert len(frames) == 15


def test_opencv_reports_a_source_that_cannot_be_opened(tmp_path):
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource(url=str(tmp_path / "missing.mp4")).open()


# --------------------------------------------------------------------------- picamera2 (fake camera)


class FakePicamera2:
    """Stand-in for picamera2.Picamera2 with the methods crackd uses (see the module docstring).

    `hang=True` makes captures never complete (wait() raises TimeoutError after the timeout),
    like a camera whose cable came loose.
    """

    instances: ClassVar[list] = []

    def __init__(self, camera_num=0, hang=False):
        self.camera_num = camera_num
        self.hang = hang
        self.calls = []
        self.config = None
        self.started = False
        self.closed = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=4):
        self.calls.append("create_video_configuration")
        return {
            "use_case": "video",
            "main": dict(main),
            "lores": dict(lores),
            "controls": controls,
            "buffer_count": buffer_count,
        }

    def create_still_configuration(self, main=None, lores=None, controls=None, buffer_count=1):
        self.calls.append("create_still_configuration")
        return {
            "use_case": "still",
            "main": dict(main),
            "lores": dict(lores),
            "controls": controls,
            "buffer_count": buffer_count,
        }

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True

    def _array(self, stream):
        w, h = stream["size"]
        if stream["format"] == "YUV420":
            # I420 of a uniform pure-red picture: Y=81, U=90, V=240 (BT.601 studio range)
            yuv = np.empty((h * 3 // 2, w), np.uint8)
            yuv[:h] = 81
            yuv[h : h + h // 4] = 90
            yuv[h + h // 4 :] = 240
            return yuv
        bgrx = np.zeros((h, w, 4), np.uint8)  # libcamera RGB888/XRGB8888: B, G, R(, X) in memory
        bgrx[..., 2] = 255
        return bgrx[..., :3] if stream["format"] == "RGB888" else bgrx

    def capture_arrays(self, names, wait=None, signal_function=None):
        assert wait is False, "crackd must not block inside picamera2 without a timeout"
        return ("job", list(names))

    def wait(self, job, timeout=None):
        if self.hang:
            time.sleep(min(timeout or 0, 0.05))
            raise TimeoutError()
        _, names = job
        return [self._array(self.config[n]) for n in names], {"SensorTimestamp": 0}


def test_picamera2_configures_main_and_lores_and_converts_yuv420_to_rgb():
    cam = FakePicamera2()
    source = Picamera2Source(main=(320, 240), lores=(64, 48), fps=15, factory=lambda n: cam)
    source.open()
    frame = source.read(1.0)
    assert cam.calls == ["create_video_configuration"] and cam.started
    assert cam.config["lores"] == {"size": (64, 48), "format": "YUV420"}
    assert cam.config["controls"] == {"FrameRate": 15.0}
    assert frame.rgb.shape == (48, 64, 3)
    r, g, b = frame.rgb[10, 10].astype(int)
    assert r > 230 and g < 25 and b < 25
    assert frame.main_bgr.shape == (240, 320, 3) and tuple(frame.main_bgr[0, 0]) == (0, 0, 255)  # left as B, G, R
    source.close()
    assert cam.closed


def test_picamera2_rgb888_lores_and_still_configuration():
    cam = FakePicamera2()
    source = Picamera2Source(
        lores=(32, 24), lores_format="RGB888", still=True, snapshot_from_main=False, factory=lambda n: cam
    )
    source.open()
    frame = source.read(1.0)
    assert cam.calls == ["create_still_configuration"]
    assert frame.main_bgr is None and tuple(frame.rgb[0, 0]) == (255, 0, 0)


def test_a_hung_picamera2_capture_becomes_a_timeout_not_a_frozen_daemon():
    source = Picamera2Source(factory=lambda n: FakePicamera2(hang=True))
    source.open()
    with pytest.raises(SourceTimeout):
        source.read(0.05)


def test_missing_picamera2_is_a_clear_source_error():
    with pytest.raises(SourceError, match=r"picamera2 is not installed|cannot start camera"):
        Picamera2Source().open()


def test_yuv420_rows_padded_to_the_stride_are_cropped():
    yuv = np.full((48 * 3 // 2, 80), 128, np.uint8)  # 64 px wide picture in 80 px stride
    assert yuv420_to_rgb(yuv, 64, 48).shape == (48, 64, 3)


# --------------------------------------------------------------------------- resilience


class Flaky(FrameSource):
    """A source that follows a script: 'f' frame, 't' timeout, 'e' error; opening fails while `down` is set."""

    name = "flaky"

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.down = threading.Event()
        self.opens = 0

    def open(self):
        if self.down.is_set():
            raise SourceError("unplugged")
        self.opens += 1

    def read(self, timeout):
        step = self.script.pop(0) if self.script else "f"
        if step == "t":
            raise SourceTimeout("no frame")
        if step == "e":
            raise SourceError("stream dropped")
        return self._frame(np.zeros((4, 4, 3), np.uint8))


def test_stalls_are_retried_and_counted():
    states = []
    src = Flaky("tt")
    wrapped = ResilientSource(src, retry_initial_s=0.01, on_state=lambda s, info: states.append(s))
    frame = wrapped.read()
    assert isinstance(frame, Frame)
    assert src.health.stalls == 2 and src.opens == 1
    assert states == ["stalled", "ok"]


def test_repeated_stalls_reopen_the_camera():
    src = Flaky("ttt")
    wrapped = ResilientSource(src, retry_initial_s=0.01, stalls_before_reconnect=3)
    wrapped.read()
    assert src.opens == 2 and src.health.reconnects == 1


def test_a_failed_source_is_reconnected_with_backoff_and_its_state_reported():
    states = []
    src = Flaky("")
    wrapped = ResilientSource(
        src, retry_initial_s=0.02, retry_max_s=0.05, on_state=lambda s, info: states.append((s, dict(info)))
    )
    wrapped.read()
    src.script = ["e"]  # the stream drops, and reopening fails until the camera is back 0.3 s later
    src.down.set()
    threading.Timer(0.3, src.down.clear).start()
    t0 = time.monotonic()
    wrapped.read()
    assert time.monotonic() - t0 >= 0.25
    assert [s for s, _ in states] == ["ok", "reconnecting", "ok"]
    assert src.health.reconnects == 1 and src.health.errors >= 3
    assert states[1][1]["detail"] == "stream dropped"


def test_a_finished_source_is_reported_and_raised(tmp_path):
    write_frames(tmp_path, "C")
    states = []
    wrapped = ResilientSource(FolderSource(tmp_path, fps=0, loop=False), on_state=lambda s, i: states.append(s))
    wrapped.read()
    with pytest.raises(SourceExhausted):
        wrapped.read()
    assert states == ["ok", "finished"]


def test_a_folder_that_disappears_and_comes_back_is_reconnected(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, "C.C.")
    src = FolderSource(folder, fps=0, loop=True)
    states = []
    wrapped = ResilientSource(src, retry_initial_s=0.02, retry_max_s=0.05, on_state=lambda s, i: states.append(s))
    wrapped.read()
    shutil.move(folder, tmp_path / "away")
    threading.Timer(0.3, lambda: shutil.move(tmp_path / "away", folder)).start()
    frame = wrapped.read()
    assert frame.ref == "f000001.png"  # carries on where it was
    assert states == ["ok", "reconnecting", "ok"] and src.health.reconnects == 1


def test_stop_interrupts_a_reconnect_loop():
    src = Flaky("")
    src.down.set()
    stop = threading.Event()
    wrapped = ResilientSource(src, retry_initial_s=10, stop=stop)
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ResilientSource.Stopped):
        wrapped.read()


def test_a_looped_folder_can_keep_decoded_frames_within_a_budget(tmp_path):
    write_frames(tmp_path, "C.C.")
    source = FolderSource(tmp_path, fps=0, loop=True, cache_mb=1)
    source.open()
    first = [source.read(1.0) for _ in range(4)]
    again = [source.read(1.0) for _ in range(4)]
    assert all(a.rgb is b.rgb for a, b in zip(first, again))  # served from memory
    assert not again[0].rgb.flags.writeable
    cv2.imwrite(str(tmp_path / "f000000.png"), np.zeros((48, 64, 3), np.uint8))  # a file that changes is read again
    time.sleep(0.01)
    (tmp_path / "f000000.png").touch()
    changed = [source.read(1.0) for _ in range(4)]
    assert changed[0].rgb.max() == 0


# --------------------------------------------------------------------------- hostile files


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_before_decoding(tmp_path):
    from edge.sources.images import ImageTooLarge, decode_rgb, header_size, read_rgb

    path = tmp_path / "huge.jpg"
    path.write_bytes(huge_header_jpeg())
    data = np.fromfile(path, np.uint8)
    assert header_size(data) == (12000, 12000)
    with pytest.raises(ImageTooLarge, match=r"huge.jpg: 12000x12000 pixels \(144.0 MP\) is over the limit of 40 MP"):
        read_rgb(path)
    with pytest.raises(ImageTooLarge):
        decode_rgb(data, max_pixels=1000)
    small = np.fromfile(path, np.uint8)
    assert decode_rgb(small, max_pixels=None) is None or True  # no limit: OpenCV decides (garbage or None)
    for ext in (".png", ".bmp", ".tif", ".webp"):
        _ok, buf = cv2.imencode(ext, np.zeros((30, 50, 3), np.uint8))
        assert header_size(buf) == (50, 30), ext
        with pytest.raises(ImageTooLarge):
            decode_rgb(buf, max_pixels=1000)


def test_the_folder_camera_skips_an_oversized_image_and_logs_each_bad_file_once_per_interval(tmp_path, caplog):
    write_frames(tmp_path, "C.X")
    (tmp_path / "f000009.jpg").write_bytes(huge_header_jpeg())
    source = FolderSource(tmp_path, fps=0, loop=True, max_pixels=40_000_000)
    with caplog.at_level("WARNING", logger="edge.sources.folder"):
        frames = read_all(source, limit=40)  # 20 passes over 2 good and 2 bad files
    assert len(frames) == 40 and source.health.bad_frames >= 38
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one line per bad file, not one per pass
    assert any("f000002.png" in m and "not a readable image" in m for m in lines)
    assert any("f000009.jpg" in m and "12000x12000" in m and "over the limit" in m for m in lines)


@pytest.mark.parametrize("how", ["truncated", "scribbled", "garbage"])
def test_a_corrupt_video_file_is_a_failure_not_an_end(tmp_path, how):
    path = damaged_video(tmp_path, how)
    source = ResilientSource(OpenCVSource(url=str(path)), retry_initial_s=0.01, retry_max_s=0.01)
    with pytest.raises(SourceFailed, match="corrupt"):
        for _ in range(100):
            source.read()
    assert source.state == "failed"


# --------------------------------------------------------------------------- registry


def test_each_registered_adapter_is_a_source_type_with_its_own_option_section():
    import dataclasses
    import typing

    from edge.config import SourceConfig

    names = [adapter.name for adapter in ADAPTERS]
    assert names == ["synthetic", "folder", "opencv", "picamera2"]
    hints = typing.get_type_hints(SourceConfig)
    assert typing.get_args(hints["type"]) == tuple(names)
    for adapter in ADAPTERS:
        assert hints[adapter.name] is adapter.Options and adapter_for(adapter.name) is adapter
    assert [f.name for f in dataclasses.fields(SourceConfig)][4:] == names
    with pytest.raises(ValueError, match="unknown source type 'webcam'"):
        adapter_for("webcam")


def test_make_source_builds_the_configured_adapter_from_its_option_section(tmp_path):
    from edge.config import config_from_dict

    def source_for(section: dict):
        cfg = config_from_dict({"source": {"read_timeout_s": 2.5, **section}})
        return make_source(cfg.source), cfg.source

    folder, cfg = source_for({"type": "folder", "folder": {"path": str(tmp_path), "fps": 0, "max_image_mpixels": 2}})
    assert isinstance(folder, FolderSource) and folder.path == tmp_path and folder.lossless
    assert folder.max_pixels == 2_000_000 and FolderSource.nominal_fps(cfg.options) == 0
    unlimited, _ = source_for({"type": "folder", "folder": {"path": str(tmp_path), "max_image_mpixels": 0}})
    assert unlimited.max_pixels is None
    assert FolderSource(tmp_path).max_pixels == 40_000_000  # the option's default
    camera, cfg = source_for({"type": "opencv", "opencv": {"index": 3, "open_timeout_s": 7}})
    assert isinstance(camera, OpenCVSource) and camera.target == 3
    assert (camera.open_timeout_s, camera.read_timeout_s) == (7, 2.5) and OpenCVSource.live
    pi, cfg = source_for({"type": "picamera2", "picamera2": {"lores": [64, 48], "fps": 15}})
    assert isinstance(pi, Picamera2Source) and pi.lores_size == (64, 48)
    assert Picamera2Source.nominal_fps(cfg.options) == 15 and Picamera2Source.live
    demo, cfg = source_for({"synthetic": {"fps": 4}})
    assert isinstance(demo, SyntheticSource) and SyntheticSource.nominal_fps(cfg.options) == 4
    assert not SyntheticSource.live and not FolderSource.live


def test_reading_the_config_loads_neither_numpy_nor_opencv():
    """edge.config imports every adapter for its options; the adapters load numpy and OpenCV only when they run."""
    import subprocess
    import sys

    code = "import sys, edge.config; print(sorted(m for m in ('numpy', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_adapter_missing_a_declaration_is_refused_when_registered():
    from edge.sources.registry import _check_declarations

    class Incomplete(SourceAdapter):
        name = "incomplete"
        live = True

        def open(self):
            pass

        def read(self, timeout):
            raise SourceExhausted("nothing")

    with pytest.raises(TypeError, match="Incomplete: does not define from_config, nominal_fps, Options"):
        _check_declarations((Incomplete,))
    with pytest.raises(TypeError, match="its name 'folder' is taken"):
        _check_declarations((FolderSource, type("Again", (FolderSource,), {})))

"""`crack-train site pull|label|adapt|push|status NAME`: one site's adaptation loop, guided, in one folder.

The steps run the commands that do the work (`crack-deploy pull` / `push` as programs: the trainer never imports
the deploy tool; `crack-train label`, `adapt` and `export`) and say after each what happened and what comes next.
Everything a site has lives in its folder (default sites/NAME, or --site-dir):

    SITE/images, predicted, masks, pulled.jsonl   what `crack-deploy pull` brings and the person labels
    SITE/labelling/                              the labelling task (CVAT zip or Label Studio JSON)
    SITE/adapt/NAME/images, masks                the labelled pairs adapt trained on (the folder name is the site's)
    SITE/runs/adapt-STAMP/                       each adapt run (ADAPT.md, adapt.json, checkpoints)
    SITE/runs/adapt-STAMP/classifier/            its classifier's, when the base published classifier.keras
    SITE/bundles/VERSION/                        each site bundle exported from a run
    SITE/site.json                               the devices (hosts, ssh options), the last bundle, the pushes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from edge.events.pull_answer import PULLED_MANIFEST, read_pulled
from trainer.cli.checks import InputError

SITE_FILE = "site.json"
# The device options `pull` remembers for `push` (argparse dest -> the crack-deploy flag).
DEVICE_FLAGS = {
    "hosts_file": "--hosts-file",
    "ssh_config": "-F",
    "remote_crackd": "--remote-crackd",
    "remote_config": "--remote-config",
    "remote_state_dir": "--remote-state-dir",
}
CRACK_DEPLOY = [sys.executable, "-m", "deploy.cli"]
CRACK_TRAIN = [sys.executable, "-m", "trainer.cli"]
CLASSIFIER_RUN = "classifier"  # the classifier's adapt run, inside the segmenter's run directory


def site_dir(args) -> Path:
    return Path(args.site_dir) if args.site_dir else Path("sites") / args.name


def read_state(site: Path) -> dict:
    path = site / SITE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc.msg}, line {exc.lineno}); fix or delete it") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a JSON object")
    return state


def write_state(site: Path, state: dict) -> None:
    from edge.atomic_write import write_json_atomic

    write_json_atomic(site / SITE_FILE, state)


def header(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def run_step(argv: list[str], what: str) -> int:
    """Run one of the underlying commands with its output on this terminal; the command line is shown first."""
    shown = ["crack-deploy" if argv[:3] == CRACK_DEPLOY else "crack-train", *argv[3:]]
    print("$ " + subprocess.list2cmdline(shown), flush=True)
    code = subprocess.run(argv, check=False).returncode
    if code:
        print(f"{what} failed (exit code {code}); see the lines above", flush=True)
    return code


# --- what the site folder holds --------------------------------------------------------------------------------


def stems(folder: Path) -> set[str]:
    from edge.sources.images import image_files

    return {p.stem for p in image_files(folder)} if folder.is_dir() else set()


def label_counts(site: Path) -> dict[str, int]:
    """Images, labelled (with cracks / crack-free) and waiting for a mask."""
    import cv2

    images, masks = stems(site / "images"), stems(site / "masks")
    labelled = images & masks
    cracked = sum(
        1
        for stem in labelled
        if (m := cv2.imread(str(site / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)) is not None and m.any()
    )
    return {
        "images": len(images),
        "labelled": len(labelled),
        "with_cracks": cracked,
        "crack_free": len(labelled) - cracked,
        "unlabelled": len(images - masks),
    }


def labels_line(site: Path) -> str:
    c = label_counts(site)
    return (
        f"{c['images']} frames: {c['labelled']} labelled ({c['with_cracks']} with cracks, {c['crack_free']} "
        f"crack-free), {c['unlabelled']} waiting for a mask"
    )


def pulled(site: Path) -> list[dict]:
    """The events pulled into the site, once each (crack-deploy pull's record, read as it reads it)."""
    return list(read_pulled(site / PULLED_MANIFEST)[0].values())


# --- the steps -------------------------------------------------------------------------------------------------


def device_argv(devices: dict) -> list[str]:
    argv = []
    for key, flag in DEVICE_FLAGS.items():
        if devices.get(key):
            argv += [flag, str(devices[key])]
    for option in devices.get("ssh_option", []):
        argv += ["-o", option]
    return argv


def devices_of(args, state: dict) -> dict:
    """The devices named on this command line, else those the site remembers."""
    given = {key: getattr(args, key) for key in (*DEVICE_FLAGS, "ssh_option") if getattr(args, key)}
    for key in ("hosts_file", "ssh_config"):  # paths stay valid from another working directory
        if key in given:
            given[key] = str(Path(given[key]).resolve())
    if args.hosts or given.get("hosts_file"):
        return {"hosts": list(args.hosts), **given}
    remembered = dict(state.get("devices", {}))
    if not remembered.get("hosts") and not remembered.get("hosts_file"):
        raise InputError("no devices: name them (HOST ... or --hosts-file); the site remembers them after a pull")
    return {**remembered, **given}


def cmd_pull(args) -> int:
    site = site_dir(args)
    site.mkdir(parents=True, exist_ok=True)
    state = read_state(site)
    devices = devices_of(args, state)
    header(f"site {args.name}: pull labelled events from {', '.join(devices['hosts']) or devices['hosts_file']}")
    before = {(e["host"], e["uuid"]) for e in pulled(site)}
    code = run_step([*CRACK_DEPLOY, "pull", str(site), *devices["hosts"], *device_argv(devices)], "the pull")
    new = [e for e in pulled(site) if (e["host"], e["uuid"]) not in before]
    write_state(site, {**state, "name": args.name, "devices": devices})
    header(f"site {args.name}: pulled")
    by_host = Counter(e["host"] for e in new)
    verdicts = Counter(e.get("label") for e in new)
    print(
        f"new events: {len(new)}"
        + (f" ({', '.join(f'{h}: {n}' for h, n in sorted(by_host.items()))})" if new else " (nothing new)")
    )
    if new:
        print("operators' verdicts: " + ", ".join(f"{v}: {n}" for v, n in sorted(verdicts.items())))
    print(f"site {site}: {labels_line(site)}")
    print(f"next: crack-train site label {args.name}{_dir_flag(args)}")
    return code


def cmd_label(args) -> int:
    from trainer.cli.label import cmd_label_export, cmd_label_import

    site = site_dir(args)
    if not (site / "images").is_dir():
        raise InputError(f"{site}: no frames yet (run crack-train site pull {args.name} HOST ... first)")
    if args.import_file:
        header(f"site {args.name}: import the corrected masks from {args.import_file}")
        cmd_label_import(argparse.Namespace(file=args.import_file, site=str(site), format=None, label=args.label))
    else:
        header(f"site {args.name}: labelling task ({args.format})")
        out = site / "labelling" / ("task.zip" if args.format == "cvat" else "tasks.json")
        out.parent.mkdir(exist_ok=True)
        cmd_label_export(
            argparse.Namespace(
                site=str(site),
                out=str(out),
                format=args.format,
                predicted=None,
                label=args.label,
                without_images=False,
                document_root=None,
                image_url_prefix=None,
            )
        )
    header(f"site {args.name}: labels")
    print(f"site {site}: {labels_line(site)}")
    if not args.import_file:
        print(f"after labelling: crack-train site label {args.name}{_dir_flag(args)} --import EXPORT")
    print(f"next: crack-train site adapt {args.name}{_dir_flag(args)}")
    return 0


def gather_labelled(site: Path, name: str) -> Path:
    """SITE/adapt/NAME/images + masks: the labelled pairs only (adapt needs a mask for every image it is given),
    in a folder named after the site (adapt records the folder's name as the site's)."""
    from edge.sources.images import image_files

    data = site / "adapt" / name
    shutil.rmtree(data, ignore_errors=True)
    masks = stems(site / "masks")
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for image in image_files(site / "images"):
        if image.stem in masks:
            shutil.copy2(image, data / "images" / image.name)
            shutil.copy2(site / "masks" / f"{image.stem}.png", data / "masks" / f"{image.stem}.png")
    return data


def _adapt_report(run: Path) -> list[str]:
    """adapt's own summary (before/after on the held-out site images, the kept epoch, the threshold; the
    classifier's gate when it was adapted too), from the reports the runs wrote."""
    from trainer.evaluation.adaptation import ADAPT_REPORT, REPORT_MD, summary_lines
    from trainer.evaluation.classifier_adaptation import classifier_summary_lines

    if not (run / ADAPT_REPORT).is_file():
        return []
    lines = [*summary_lines(json.loads((run / ADAPT_REPORT).read_text())), f"report: {run / REPORT_MD}"]
    cls = run / CLASSIFIER_RUN
    if (cls / ADAPT_REPORT).is_file():
        lines += [*classifier_summary_lines(json.loads((cls / ADAPT_REPORT).read_text())), f"report: {cls / REPORT_MD}"]
    return lines


def _adapt_argv(args, base: Path, data: Path, out: Path, flags: tuple[str, ...]) -> list[str]:
    argv = [*CRACK_TRAIN, "adapt", "--base", str(base), "--data", str(data), "--out", str(out), "--site", args.name]
    for flag in flags:
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return argv


def cmd_adapt(args) -> int:
    from edge.engine.bundle import read_manifest

    site = site_dir(args)
    state = read_state(site)
    counts = label_counts(site)
    if counts["labelled"] == 0:
        raise InputError(f"{site}: no labelled frames (crack-train site label {args.name} first)")
    base = Path(args.base_bundle)
    base_version = read_manifest(base).bundle_version
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    version = args.version or f"{base_version}-{args.name}-{stamp}"
    run = site / "runs" / f"adapt-{stamp}"
    # The base's classifier checkpoint, published beside the segmenter's (export --finetune-dir), is adapted too.
    classifier_base = Path(args.finetune).parent / "classifier.keras"
    classifier_run = run / CLASSIFIER_RUN if classifier_base.is_file() and not args.no_classifier else None
    header(f"site {args.name}: adapt {base.name} ({base_version}) on {counts['labelled']} labelled frames")
    data = gather_labelled(site, args.name)
    flags = ("epochs", "steps_per_epoch", "batch_size", "domain")
    if run_step(_adapt_argv(args, Path(args.finetune), data, run, (*flags, "crop")), "adapt"):
        return 1
    if classifier_run is not None:
        header(f"site {args.name}: adapt the classifier ({classifier_base})")
        if run_step(_adapt_argv(args, classifier_base, data, classifier_run, flags), "adapt of the classifier"):
            return 1
    header(f"site {args.name}: export the site bundle {version}")
    bundle = site / "bundles" / version
    argv = [*CRACK_TRAIN, "export", "--segmenter", str(run), "--keep-from", str(base), "--out", str(bundle)]
    if classifier_run is not None:
        argv += ["--classifier", str(classifier_run)]
    argv += ["--version", version]
    for flag in ("calibration_images", "tolerance", "sign"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.force:
        argv.append("--force")
    exported = run_step(argv, "the export") == 0
    header(f"site {args.name}: adapted")
    print(f"trained on {counts['labelled']} labelled frames ({counts['unlabelled']} still waiting for a mask)")
    for line in _adapt_report(run):
        print(line)
    if not exported:
        print(
            f"no site bundle: the export refused or failed, see above (the run is kept in {run}). A bundle worse "
            "than its base on the held-out frames is refused: label more frames and adapt again, or --force"
        )
        return 1
    manifest = read_manifest(bundle)
    seg = manifest.models["segmenter"]
    gate = f", classifier gate {manifest.gate_threshold}" if classifier_run is not None else ""
    print(f"site bundle: {bundle} (version {version}, pixel threshold {seg.threshold}{gate}, base {base_version})")
    write_state(site, {**state, "name": args.name, "bundle": str(bundle.resolve()), "base_bundle": str(base)})
    print(f"next: crack-train site push {args.name}{_dir_flag(args)} [--canary N]")
    return 0


def cmd_push(args) -> int:
    from edge.engine.bundle import read_manifest

    site = site_dir(args)
    state = read_state(site)
    bundle = Path(args.bundle or state.get("bundle") or "")
    if not (args.bundle or state.get("bundle")):
        raise InputError(f"{site}: no site bundle yet (crack-train site adapt {args.name} first, or --bundle DIR)")
    version = read_manifest(bundle).bundle_version
    devices = devices_of(args, state)
    targets = ", ".join(devices["hosts"]) or devices["hosts_file"]
    header(f"site {args.name}: push {version} to {targets}")
    argv = [*CRACK_DEPLOY, "push", str(bundle), *devices["hosts"], *device_argv(devices)]
    for flag in ("canary", "timeout", "settle", "who"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    code = run_step(argv, "the push")
    pushes = [
        *state.get("pushed", []),
        {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "bundle_version": version,
            "hosts": targets,
            "ok": code == 0,
        },
    ]
    write_state(site, {**state, "name": args.name, "devices": devices, "pushed": pushes})
    header(f"site {args.name}: pushed")
    print(f"bundle {version} ({bundle}) to {targets}: {'every device serves it' if code == 0 else 'NOT everywhere'}")
    print(f"check a device: crackd models status (shows the base bundle and site {args.name})")
    return code


def cmd_status(args) -> int:
    site = site_dir(args)
    state = read_state(site)
    header(f"site {args.name} ({site})")
    hosts = state.get("devices", {}).get("hosts") or [state.get("devices", {}).get("hosts_file", "none yet")]
    print(f"devices: {', '.join(hosts)}")
    print(f"pulled events: {len(pulled(site))}; {labels_line(site)}")
    runs = sorted((site / "runs").glob("adapt-*")) if (site / "runs").is_dir() else []
    print(f"adapt runs: {len(runs)}" + (f", the last {runs[-1].name}" if runs else ""))
    if runs:
        for line in _adapt_report(runs[-1]):
            print(line)
    print(f"site bundle: {state.get('bundle', 'none yet')}")
    for push in state.get("pushed", [])[-3:]:
        print(
            f"pushed {push['bundle_version']} to {push['hosts']} at {push['time']}: {'ok' if push['ok'] else 'FAILED'}"
        )
    return 0


def _dir_flag(args) -> str:
    return f" --site-dir {args.site_dir}" if args.site_dir else ""


def register(sub) -> None:
    p = sub.add_parser(
        "site",
        help="one site's adaptation loop, step by step: pull, label, adapt, push (state in sites/NAME)",
        description="The loop that adapts the model to one inspection line, one command per step, each ending "
        "with a summary and the next command: pull (the labelled events from the line's devices), label (a CVAT "
        "or Label Studio task from crackd's predicted masks; import the corrections), adapt (fine-tune on the "
        "labelled frames and export a site bundle), push (deploy it, --canary first). status shows where a site "
        "stands. Everything is kept in the site's folder, sites/NAME unless --site-dir says otherwise.",
    )
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name: str, help_text: str, func) -> argparse.ArgumentParser:
        s = steps.add_parser(name, help=help_text, description=help_text)
        s.add_argument("name", metavar="NAME", help="the site's name (a letter, digit, . _ or -)")
        s.add_argument("--site-dir", metavar="DIR", help="the site's folder (default sites/NAME)")
        s.set_defaults(func=func)
        return s

    def devices(s: argparse.ArgumentParser) -> None:
        s.add_argument("hosts", nargs="*", metavar="HOST", help="devices (default: those of the last pull or push)")
        s.add_argument("--hosts-file", metavar="FILE", help="more hosts, one per line")
        s.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file")
        s.add_argument("-o", "--ssh-option", action="append", default=[], metavar="KEY=VALUE", help="ssh option")
        s.add_argument("--remote-crackd", metavar="CMD", help="crackd command on the devices")
        s.add_argument("--remote-config", metavar="FILE", help="daemon config on the devices")
        s.add_argument("--remote-state-dir", metavar="DIR", help="state directory on the devices")

    s = step(
        "pull",
        "fetch the events operators labelled on the site's devices (crack-deploy pull); the devices and ssh "
        "options are remembered for push",
        cmd_pull,
    )
    devices(s)

    s = step(
        "label",
        "write a labelling task with crackd's predicted masks drawn in (SITE/labelling/), or --import the "
        "tool's export into SITE/masks; shows how many frames are labelled",
        cmd_label,
    )
    s.add_argument(
        "--format", choices=("cvat", "labelstudio"), default="cvat", help="the labelling tool (default cvat)"
    )
    s.add_argument("--import", dest="import_file", metavar="EXPORT", help="CVAT zip or Label Studio JSON export")
    s.add_argument("--label", default="crack", help="the label's name in the tool (default: crack)")

    s = step(
        "adapt",
        "fine-tune the base model's segmenter, and its classifier when the base published classifier.keras beside "
        "segmenter.keras, on the site's labelled frames (crack-train adapt) and export a site bundle "
        "(crack-train export --keep-from: a model not adapted is kept from the base)",
        cmd_adapt,
    )
    s.add_argument("--base-bundle", default="models/default", metavar="DIR", help="default models/default")
    s.add_argument(
        "--finetune",
        default="models/finetune/segmenter.keras",
        metavar="CHECKPOINT",
        help="the base's fine-tuning checkpoint (default models/finetune/segmenter.keras); a classifier.keras "
        "beside it is adapted too",
    )
    s.add_argument(
        "--no-classifier",
        action="store_true",
        help="adapt the segmenter only and keep the base's classifier (and its gate threshold)",
    )
    for flag in ("--epochs", "--steps-per-epoch", "--batch-size", "--domain", "--crop", "--calibration-images"):
        s.add_argument(flag, type=int, default=None, help="passed to crack-train adapt/export (default: theirs)")
    s.add_argument("--tolerance", type=float, default=None, help="passed to crack-train export")
    s.add_argument("--version", help="the site bundle's version (default BASE_VERSION-NAME-UTCSTAMP)")
    s.add_argument("--sign", metavar="KEY", help="sign the site bundle with this OpenSSH ed25519 key")
    s.add_argument("--force", action="store_true", help="export even a bundle worse than its base (crack-train export)")

    s = step("push", "deploy the site's last bundle to its devices (crack-deploy push)", cmd_push)
    devices(s)
    s.add_argument("--bundle", metavar="DIR", help="push this bundle instead of the site's last one")
    s.add_argument("--canary", type=int, default=None, metavar="N", help="the first N devices first")
    s.add_argument("--timeout", type=float, default=None, metavar="S", help="passed to crack-deploy push")
    s.add_argument("--settle", type=float, default=None, metavar="S", help="passed to crack-deploy push")
    s.add_argument("--who", help="name for the devices' history")

    step("status", "what the site has: devices, pulled and labelled frames, adapt runs, bundles, pushes", cmd_status)

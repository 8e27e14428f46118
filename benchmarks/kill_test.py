"""Kill test: SIGKILL each segdiff command at several moments, rerun it, and demand the result
of an uninterrupted run, with no temporaries left and no process outliving the kill.

    python benchmarks/kill_test.py                       # every command, every moment
    python benchmarks/kill_test.py --commands prepare,export --repeats 3 --work /tmp/kills

For each command an uninterrupted run gives the reference. Then, per moment and repeat, the
command runs in its own process group; a watcher polls its output folder every millisecond
and SIGKILLs the main process (only it, as the kernel's OOM killer or a scheduler would) once
the moment is reached: a file or folder that exists only then (a VAE checkpoint, a staged
checkpoint, a pruned one, an export's old folder moved aside), or a share of the reference
run's duration. Where strace is installed, ``rename`` calls are slowed down in train and
export trials, so that the moments around a rename last long enough to be hit. The command
is then run again as a user would continue it (``train --resume latest``, ``infer
--skip-existing``, the same command otherwise), and the trial fails if

- a process of the killed command is still running a second after the kill,
- the rerun does not exit 0,
- its result differs from the reference (every file's bytes; for training, the weights of
  RUN/model and RUN/frozen),
- a temporary is left: a ``.segdiff-*`` file or folder, ``.tmp-*`` or ``.deleting-*``
  staging, a VAE pre-training checkpoint, a checkpoint folder without its checkpoint.json.

A moment the command passed too quickly to be seen counts as missed, not as a trial. The table
at the end counts trials and failures per command and moment.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "tiny-shapes.yaml"
TRAIN = [
    "data.resolution=32", "train.batch_size=4", "train.steps=6", "train.checkpoint_every=1",
    "train.checkpoint_limit=1", "model.vae=null", "vae_pretrain.steps=20",
    "vae_pretrain.batch_size=4", "vae_pretrain.crop=16", "validation.num_images=0",
    "model.processing_resolution=32",
    "model.tiny.unet.block_out_channels=[16, 32, 32]", "model.tiny.unet.norm_num_groups=8",
]  # fmt: skip
SLOW_RENAMES = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=rename,renameat,renameat2",
                "-e", "inject=rename,renameat,renameat2:delay_exit=150000"]  # fmt: skip
TEMPORARY_MARKS = (".segdiff-", ".tmp-", ".deleting-")


@dataclass
class Moment:
    name: str
    reached: Callable[[Path, float], bool]
    """(the trial's folder, seconds since the start as a share of the reference run) -> bool"""


@dataclass
class Command:
    name: str
    run: Callable[[Path], list[str]]
    """The command for a trial folder (its output lives inside it)."""
    again: Callable[[Path], list[str]]
    """How a user continues after a kill."""
    result: Callable[[Path], dict[str, bytes]]
    """What must equal the reference: relative name -> content."""
    moments: list[Moment]
    setup: Callable[[Path], None] = lambda folder: None
    slow_renames: bool = False


@dataclass
class Tally:
    trials: int = 0
    missed: int = 0
    failures: list[str] = field(default_factory=list)


def segdiff(*args: object) -> list[str]:
    return [sys.executable, "-m", "segdiff", *map(str, args)]


def glob_any(pattern: str) -> Callable[[Path, float], bool]:
    return lambda folder, share: any(folder.glob(pattern))


def after(share: float) -> Moment:
    return Moment(f"at {share:.0%} of the run", lambda folder, elapsed: elapsed >= share)


def files_of(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file below ``root`` by relative name, its absolute paths made relative."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_file() and not any(part in name for part in skip):
            found[name] = path.read_bytes().replace(str(root).encode(), b"ROOT")
    return found


def model_weights(run: Path) -> dict[str, bytes]:
    """The tensors of RUN/model and RUN/frozen (safetensors bytes hold only tensors and a
    fixed header, so equal weights give equal files)."""
    return {
        str(path.relative_to(run)): path.read_bytes()
        for folder in (run / "model", run / "frozen")
        for path in sorted(folder.rglob("*.safetensors"))
    }


def prepared(folder: Path) -> dict[str, bytes]:
    files = files_of(folder / "data", skip=(".journal.jsonl",))
    journal = folder / "data" / "train" / ".journal.jsonl"
    lines = sorted(journal.read_text().splitlines()) if journal.is_file() else []
    files["journal entries"] = "\n".join(lines).encode()
    return files


def commands(data: Path, model: Path, run: Path) -> list[Command]:
    """The five commands, on the shared inputs: ``data`` a prepared shapes folder, ``model``
    the bundled model, ``run`` a finished training run."""
    prepare = ["prepare", "shapes", "--train-size", 300, "--val-size", 20, "--size", 64]
    prepare += ["--workers", 2]
    train = ["train", RECIPE, f"data.root={data}", *TRAIN]
    infer = ["infer", data / "val" / "images", "-c", "shapes", "--seed", 0]
    infer += ["--ensemble-size", 2]
    evaluate = ["eval", "shapes", "--data", data, "--model", model, "--seed", 0]
    export = ["export", run, "--overwrite"]
    return [
        Command(
            "prepare",
            run=lambda f: segdiff(*prepare, "--out", f / "data"),
            again=lambda f: segdiff(*prepare, "--out", f / "data"),
            result=prepared,
            moments=[
                Moment("while masks are written", glob_any("data/train/masks/.*.segdiff-tmp-*")),
                after(0.6),
                after(0.8),
                after(0.95),
            ],
        ),
        Command(
            "train",
            run=lambda f: segdiff(*train, "--output", f / "run"),
            again=lambda f: segdiff(*train, "--output", f / "run", "--resume", "latest"),
            result=lambda f: model_weights(f / "run"),
            moments=[
                Moment(
                    "VAE pre-training, after its first checkpoint",
                    glob_any("run/vae_pretrain/step-*"),
                ),
                Moment(
                    "writing a VAE pre-training checkpoint", glob_any("run/vae_pretrain/.tmp-*")
                ),
                Moment("writing RUN/frozen", glob_any("run/.tmp-frozen")),
                Moment(
                    "training, before the first checkpoint",
                    lambda f, s: (
                        (f / "run" / "frozen").is_dir() and not (f / "run" / "checkpoints").exists()
                    ),
                ),
                Moment("writing a checkpoint", glob_any("run/checkpoints/.tmp-step-*")),
                Moment("pruning a checkpoint", glob_any("run/checkpoints/.deleting-*")),
                Moment("writing RUN/model", glob_any("run/.tmp-model")),
                after(0.5),
            ],
            slow_renames=True,
        ),
        Command(
            "infer",
            run=lambda f: segdiff(*infer, "-o", f / "out"),
            again=lambda f: segdiff(*infer, "-o", f / "out", "--skip-existing"),
            result=lambda f: files_of(f / "out"),
            moments=[
                Moment("after the first image", glob_any("out/*.json")),
                Moment("while an image's outputs are written", glob_any("out/.*.segdiff-tmp-*")),
                after(0.9),
            ],
        ),
        Command(
            "eval",
            run=lambda f: segdiff(*evaluate, "-o", f / "out"),
            again=lambda f: segdiff(*evaluate, "-o", f / "out"),
            result=lambda f: files_of(f / "out"),
            moments=[
                Moment("while the report is written", glob_any("out/**/.*.segdiff-tmp-*")),
                Moment("after metrics.json", glob_any("out/metrics.json")),
                after(0.7),
            ],
        ),
        Command(
            "export",
            setup=lambda f: subprocess.run(
                segdiff("export", run, "-o", f / "export"), check=True, capture_output=True
            ),
            run=lambda f: segdiff(*export, "-o", f / "export"),
            again=lambda f: segdiff(*export, "-o", f / "export"),
            result=lambda f: files_of(f / "export"),
            moments=[
                Moment("while the export is staged", glob_any(".export.segdiff-tmp-*")),
                Moment("with the old export moved aside", glob_any(".export.segdiff-old-*")),
                after(0.5),
                after(0.9),
            ],
            slow_renames=True,
        ),
    ]


def leftovers(folder: Path) -> list[str]:
    """Temporaries and half-made things left in a trial folder."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        if name.startswith(".") and any(mark in name for mark in TEMPORARY_MARKS):
            found.append(str(path.relative_to(folder)))
        elif path.parent.name in ("checkpoints", "vae_pretrain") and name.startswith("step-"):
            if not (path / "checkpoint.json").is_file():
                found.append(str(path.relative_to(folder)))
        elif name == "vae_pretrain" and path.is_dir():
            found.append(str(path.relative_to(folder)))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Processes started by ``pid`` (its pool workers), read from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        direct = [int(child) for child in children.read_text().split()]
    except OSError:
        return []
    return direct + [grandchild for child in direct for grandchild in descendants(child)]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_at(command: list[str], folder: Path, moment: Moment, reference_s: float, env) -> str:
    """Run ``command`` and SIGKILL it when ``moment`` is reached: 'killed', 'missed' (it
    ended first), or a failure message."""
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=folder, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while process.poll() is None:
            share = (time.monotonic() - start) / reference_s
            if moment.reached(folder, share):
                break
            time.sleep(0.001)
        else:
            return "missed"
        workers = [pid for pid in descendants(process.pid) if pid != process.pid]
        main = process.pid
        if command[0] == "strace":  # the traced command is strace's child
            main = next(iter(descendants(process.pid)), process.pid)
            workers = descendants(main)
        os.kill(main, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        alive = [pid for pid in workers if running(pid)]
        return f"{len(alive)} processes outlived the kill" if alive else "killed"
    finally:
        with contextlib.suppress(ProcessLookupError):  # what is left of the group
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", default="prepare,train,infer,eval,export")
    parser.add_argument("--repeats", type=int, default=2, help="trials per moment")
    parser.add_argument("--moments", default="", help="only moments whose name holds this")
    parser.add_argument("--work", type=Path, help="folder for the trials (default: a temp one)")
    parser.add_argument("--json", type=Path, help="write the tallies here too")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="segdiff-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "COLUMNS": "120"}  # fmt: skip
    strace = shutil.which("strace") is not None

    chosen = args.commands.split(",")
    shared = work / "shared"  # inputs: a prepared dataset, and a trained run to export
    if not (shared / "data" / "meta.json").is_file():
        subprocess.run(segdiff("prepare", "shapes", "--out", shared / "data", "--train-size",
                               32, "--val-size", 6, "--size", 32, "--workers", 1),
                       check=True, capture_output=True, env=env)  # fmt: skip
    if "export" in chosen and not (shared / "run" / "model").is_dir():
        shutil.rmtree(shared / "run", ignore_errors=True)
        subprocess.run(segdiff("train", RECIPE, f"data.root={shared / 'data'}", *TRAIN,
                               "--output", shared / "run"),
                       check=True, capture_output=True, env=env)  # fmt: skip
    from segdiff.model import default_model_path

    tallies: dict[tuple[str, str], Tally] = {}
    for command in commands(shared / "data", default_model_path(), shared / "run"):
        if command.name not in chosen:
            continue
        reference = work / command.name / "reference"
        shutil.rmtree(reference.parent, ignore_errors=True)
        reference.mkdir(parents=True)
        command.setup(reference)
        start = time.monotonic()
        subprocess.run(command.run(reference), check=True, capture_output=True, env=env,
                       cwd=reference)  # fmt: skip
        reference_s = time.monotonic() - start
        expected = command.result(reference)
        print(f"{command.name}: reference run {reference_s:.1f} s", flush=True)
        prefix = SLOW_RENAMES if command.slow_renames and strace else []
        for moment in [m for m in command.moments if args.moments in m.name]:
            tally = tallies.setdefault((command.name, moment.name), Tally())
            for repeat in range(args.repeats):
                folder = work / command.name / f"{len(tallies)}-{repeat}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                command.setup(folder)
                outcome = kill_at(prefix + command.run(folder), folder, moment, reference_s, env)
                if outcome == "missed":
                    tally.missed += 1
                    continue
                tally.trials += 1
                problems = [] if outcome == "killed" else [outcome]
                done = subprocess.run(command.again(folder), capture_output=True, text=True,
                                      env=env, cwd=folder)  # fmt: skip
                if done.returncode != 0:
                    problems.append(f"rerun exit {done.returncode}: {done.stderr[-300:]}")
                elif command.result(folder) != expected:
                    problems.append("result differs from the uninterrupted run")
                left = leftovers(folder)
                if left:
                    problems.append(f"left {left[:3]}")
                tally.failures += [f"{folder.name}: {p}" for p in problems]
                status = "ok" if not problems else "; ".join(problems)
                print(f"  {command.name} | {moment.name} | {status}", flush=True)

    print("\n| command | moment | trials | missed | failures |\n|---|---|---|---|---|")
    for (name, moment), tally in tallies.items():
        print(f"| {name} | {moment} | {tally.trials} | {tally.missed} | {len(tally.failures)} |")
    trials = sum(t.trials for t in tallies.values())
    failures = [f for t in tallies.values() for f in t.failures]
    print(f"\n{trials} trials, {len(failures)} failures (work folder {work})")
    for failure in failures:
        print(f"  {failure}")
    if args.json:
        rows = [{"command": n, "moment": m, "trials": t.trials, "missed": t.missed,
                 "failures": t.failures} for (n, m), t in tallies.items()]  # fmt: skip
        args.json.write_text(json.dumps({"trials": trials, "rows": rows}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

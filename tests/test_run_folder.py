"""The run folder's questions on folders written by its own writers (checkpoints, model)."""

import json
from pathlib import Path

import pytest

from segdiff import run_folder
from segdiff.errors import SegDiffInputError


def fake_checkpoint(run: Path, step: int, finished: bool = True) -> Path:
    """Only the files the run folder looks at: checkpoint.json marks a finished one."""
    folder = run_folder.checkpoint_dir(run, step)
    folder.mkdir(parents=True)
    if finished:
        (folder / run_folder.CHECKPOINT_INFO).write_text(json.dumps({"step": step}))
    return folder


def test_next_run_dir_counts_up(tmp_path):
    base = tmp_path / "runs" / "eval" / "voc20"
    assert run_folder.next_run_dir(base) == base
    base.mkdir(parents=True)
    assert run_folder.next_run_dir(base) == base.with_name("voc20-2")
    base.with_name("voc20-2").mkdir()
    assert run_folder.next_run_dir(base) == base.with_name("voc20-3")


def test_latest_checkpoint_is_the_highest_finished_step(tmp_path):
    assert run_folder.latest_checkpoint(tmp_path) is None
    fake_checkpoint(tmp_path, 900)
    newest = fake_checkpoint(tmp_path, 1000)
    fake_checkpoint(tmp_path, 1100, finished=False)  # killed mid-save
    assert run_folder.latest_checkpoint(tmp_path) == newest
    assert [p.name for p in run_folder.list_checkpoints(tmp_path)] == [
        "step-00000900",
        "step-00001000",
    ]
    assert run_folder.checkpoint_step(newest) == 1000
    assert run_folder.run_of(newest) == tmp_path


def test_publishing_keeps_the_newest_checkpoints(tmp_path):
    for step in (1, 2):
        fake_checkpoint(tmp_path, step)
    final = run_folder.checkpoint_dir(tmp_path, 3)
    temporary = run_folder.staging_dir(final, fresh=True)
    (temporary / run_folder.CHECKPOINT_INFO).write_text(json.dumps({"step": 3}))
    run_folder.publish_checkpoint(temporary, final, keep=2)
    assert [p.name for p in run_folder.list_checkpoints(tmp_path)] == [
        "step-00000002",
        "step-00000003",
    ]
    assert not temporary.exists()


def test_a_model_is_replaced_only_once_written(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), run_folder.writing_model(tmp_path) as folder:
        (folder / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert (tmp_path / "model" / "old.txt").is_file()
    with run_folder.writing_model(tmp_path) as folder:
        (folder / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.txt"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_resume_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_folder.TRAIN_RUNS / "r-2"
    checkpoint = fake_checkpoint(run, 5)
    (run_folder.TRAIN_RUNS / "r").mkdir()
    assert run_folder.resolve_run("r", None, "latest") == (run, checkpoint)
    assert run_folder.resolve_run("r", None, str(checkpoint)) == (run, checkpoint)
    assert run_folder.resolve_run("r", None, str(run)) == (run, checkpoint)
    # killed before it wrote anything: nothing to resume, so it starts (--resume latest)
    assert run_folder.resolve_run("r", tmp_path / "new", "latest") == (tmp_path / "new", None)


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    """Killed before any checkpoint: neither a rerun nor --resume is a dead end."""
    run = tmp_path / "run"
    run.mkdir()
    (run / run_folder.RECIPE).write_text("{}")
    assert run_folder.resolve_run("r", run, None) == (run, None)
    assert run_folder.resolve_run("r", run, "latest") == (run, None)
    assert run_folder.resolve_run("r", None, str(run)) == (run, None)
    fake_checkpoint(run, 1)
    with pytest.raises(SegDiffInputError, match="already holds a training run"):
        run_folder.resolve_run("r", run, None)


def test_pruning_hides_a_checkpoint_before_deleting_it(tmp_path, monkeypatch):
    """Killed mid-delete, the pruned checkpoint is neither listed nor kept by the next run."""
    for step in (1, 2):
        fake_checkpoint(tmp_path, step)
    (run_folder.checkpoint_dir(tmp_path, 1) / "unet").mkdir()

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt

    final = run_folder.checkpoint_dir(tmp_path, 3)
    temporary = run_folder.staging_dir(final, fresh=True)
    (temporary / run_folder.CHECKPOINT_INFO).write_text(json.dumps({"step": 3}))
    with monkeypatch.context() as patched:
        patched.setattr(run_folder.shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            run_folder.publish_checkpoint(temporary, final, keep=2)
    assert [p.name for p in run_folder.list_checkpoints(tmp_path)] == [
        "step-00000002",
        "step-00000003",
    ]
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / ".deleting-step-00000001").is_dir()
    run_folder.remove_stale(tmp_path)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002", "step-00000003"]


def test_remove_stale_clears_what_a_killed_run_left(tmp_path, stale_temporary):
    fake_checkpoint(tmp_path, 1)
    fake_checkpoint(tmp_path, 2, finished=False)  # a half-deleted one of an older segdiff
    run_folder.staging_dir(run_folder.checkpoint_dir(tmp_path, 3), fresh=True)
    run_folder.staging_dir(run_folder.model_dir(tmp_path), fresh=True)
    vae = run_folder.vae_checkpoint_dir(tmp_path, 10)
    run_folder.staging_dir(vae, fresh=True)
    stale_temporary(tmp_path, "metrics.json")
    (tmp_path / "notes.txt").write_text("the user's")
    removed = run_folder.remove_stale(tmp_path)
    assert len(removed) == 5
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [
        "checkpoints",
        "checkpoints/step-00000001",
        "checkpoints/step-00000001/checkpoint.json",
        "notes.txt",
        "vae_pretrain",
    ]

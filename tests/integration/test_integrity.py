"""Fault injection on job directories and inputs: each attack of issue 23 (an adversarial
user's) is refused in one line, or repaired to the bytes of a clean run.

Most attacks run the stage table in this process (``run_stages`` with ``execute_locally``:
the job directory is the same as on Ray); the Ray-specific ones (a stray ``ray start``
address file, Ray start-up failing) start or stub Ray themselves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.procs import REPO
from typer.testing import CliRunner

from ray_dissect import cli
from ray_dissect.cli.output import print_summary
from ray_dissect.datasets.base import OUTSIDE_ROOT, BadSampleError, decoding
from ray_dissect.errors import SpecError, StageError, StoreError
from ray_dissect.job import lock
from ray_dissect.job.layout import JobDir, done_marker
from ray_dissect.pipeline.run import execute_locally, run_stages
from ray_dissect.pipeline.status import render_status
from ray_dissect.runtime import cluster, submit
from ray_dissect.spec import JobSpec, load_spec, parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
runner = CliRunner()


def _spec(root: Path, quantile: float = 0.1, **dataset: object) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel", "preprocess": {"size": 8, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(root), **dataset},
        "method": {"quantile": quantile, "top_k": 8},
        "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}})


def _outputs(out: Path) -> dict[str, bytes]:
    """What a job's results are: records and errors (byte for byte)."""
    return {name: (out / name).read_bytes() for name in ("records/pool.jsonl", "errors.jsonl")}


def _clean(spec: JobSpec, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / f"clean-{spec.spec_hash()}"
    run_stages(spec, out)
    return _outputs(out)


def _computed(out: Path) -> dict[str, int]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: state["computed"] for name, state in stages.items() if state["computed"]}


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --- one writer -------------------------------------------------------------------------


@pytest.fixture
def live_process() -> Any:
    """A live process of this host (a holder that has not ended)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _plant_lock(out: Path, **holder: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": "run",
              "started": time.time(), "renewed": time.time(), "token": "other"} | holder
    (out / lock.LOCK_NAME).write_text(json.dumps(record))


def test_a_second_writer_is_refused_naming_the_holder(four_images: Path, tmp_path: Path,
                                                      live_process: Any) -> None:
    """While a live process holds DIR, run is refused in one line naming it (exit 5), and
    nothing in DIR changes; status still reads it."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    before = _outputs(out)
    _plant_lock(out, pid=live_process.pid)
    with pytest.raises(lock.JobLockedError) as refused:
        run_stages(_spec(four_images, quantile=0.3), out, force=True)
    message = _one_line(str(refused.value))
    assert f"pid {live_process.pid}" in message and "in use by" in message
    assert refused.value.exit_code == 5
    assert _outputs(out) == before
    assert f"locked by 'ray-dissect run' (pid {live_process.pid}" in render_status(out)
    unknown_layer = _spec(four_images).model_copy(update={"layers": ("nope",)})
    with pytest.raises(lock.JobLockedError):  # refused before the model is built
        run_stages(unknown_layer, out)


def test_a_dead_holder_or_an_expired_lease_is_broken_with_a_warning(
        four_images: Path, tmp_path: Path, live_process: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A lock whose process is gone (this host), or not renewed for the lease (another
    host), is broken; a live one on another host within its lease is not."""
    out, spec = tmp_path / "out", _spec(four_images)
    live_process.kill()
    live_process.wait()
    _plant_lock(out, pid=live_process.pid)
    with caplog.at_level(logging.WARNING):
        run_stages(spec, out)
    assert f"process {live_process.pid} no longer exists" in caplog.text
    assert not (out / lock.LOCK_NAME).exists()
    _plant_lock(out, host="elsewhere", renewed=time.time() - lock.LEASE_SECONDS - 5)
    run_stages(spec, out)
    assert "lease ran out" in caplog.text
    _plant_lock(out, host="elsewhere")
    with pytest.raises(lock.JobLockedError, match="host elsewhere"):
        run_stages(spec, out)


def test_the_lock_on_an_object_store_is_exclusive(local_s3: Any) -> None:
    """On S3 the lock is an exclusive create: a second acquire is refused naming the
    holder; after release it can be taken again."""
    from ray_dissect.storage import location

    root = location(local_s3.bucket("locks") + "/job")
    first = lock.acquire(root, "run")
    assert lock._create(lock.lock_path(root), b"{}") is False  # the conditional put held
    with pytest.raises(lock.JobLockedError, match=f"pid {os.getpid()}"):
        lock.acquire(root, "report")
    lock.release(root, first)
    assert lock.read_holder(root) is None
    with lock.job_lock(root, "report") as holder:
        assert lock.read_holder(root) == holder


def test_aliases_of_one_directory_get_one_submission_id(four_images: Path,
                                                        tmp_path: Path) -> None:
    """A symlink to the job directory names the same submission as the directory."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    spec = _spec(four_images)
    assert (submit.submission_id(spec, str(tmp_path / "alias"))
            == submit.submission_id(spec, str(real)))


# --- verified reuse ---------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lost_manifest_does_not_let_another_spec_reuse_the_outputs(
        four_images: Path, tmp_path: Path, damage: str) -> None:
    """With manifest.json deleted or garbage, spec.json still says what DIR holds: another
    spec is refused in one line; with --force it gives exactly a clean run's records."""
    out, old, new = tmp_path / "out", _spec(four_images), _spec(four_images, quantile=0.3)
    run_stages(old, out)
    manifest = out / "manifest.json"
    if damage == "deleted":
        manifest.unlink()
    else:
        manifest.write_text('{"spec_hash": [garbage')
    with pytest.raises(SpecError) as refused:
        run_stages(new, out)
    assert "holds a different job" in _one_line(str(refused.value))
    assert "thresholds" in str(refused.value)
    run_stages(new, out, force=True)
    assert _outputs(out) == _clean(new, tmp_path)
    assert "activations" not in _computed(out)  # unchanged stages are still reused


def test_a_garbage_manifest_is_one_line_for_status_and_rebuilt_by_resume(
        four_images: Path, tmp_path: Path) -> None:
    """status on a corrupt manifest: one line, exit 5; the same spec rebuilds it from
    spec.json, redoing nothing."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    (out / "manifest.json").write_bytes(b"\x00\xff not json")
    result = runner.invoke(cli.app, ["status", str(out)])
    assert result.exit_code == 5
    assert "corrupt" in _one_line(result.output)
    run_stages(spec, out)
    assert _computed(out) == {}
    assert _outputs(out) == _clean(spec, tmp_path)


def test_outputs_without_manifest_or_spec_are_refused(four_images: Path,
                                                      tmp_path: Path) -> None:
    """Outputs that nothing says the spec of are not reused (one line), --force clears them."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    (out / "manifest.json").unlink()
    (out / "spec.json").unlink()
    with pytest.raises(SpecError, match=r"no readable manifest\.json or spec\.json"):
        run_stages(spec, out)
    run_stages(spec, out, force=True)
    assert _outputs(out) == _clean(spec, tmp_path)


def _shard_file(out: Path, shard: int) -> Path:
    return out / "activations.zarr" / "data" / "pool" / "c" / str(shard) / "0" / "0" / "0"


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_activation_shard_is_redone(four_images: Path, tmp_path: Path,
                                              damage: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A deleted shard (which Zarr would read as zeros) or a truncated one (checksum) behind
    its done mark is redone, with a warning naming it: the records of a --force change of
    quantile equal a clean run's."""
    out, new = tmp_path / "out", _spec(four_images, quantile=0.3)
    run_stages(_spec(four_images), out)
    shard = _shard_file(out, 1)
    if damage == "deleted":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        run_stages(new, out, force=True)
    assert "redoing shard 1 of 'pool'" in caplog.text
    assert _computed(out)["activations"] == 1
    assert _outputs(out) == _clean(new, tmp_path)


def test_a_truncated_record_part_is_redone(four_images: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A record part cut mid-line with its .done kept: the digest does not match, the block
    is redone and the records are a clean run's."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    part = JobDir(out).record_part("pool", (0, 1))
    part.write_bytes(part.read_bytes()[:40])
    with caplog.at_level(logging.WARNING):
        run_stages(spec, out)
    assert f"redoing {part}" in caplog.text and "digest" in caplog.text
    assert _computed(out) == {"scoring": 1}
    assert _outputs(out) == _clean(spec, tmp_path)


def test_a_truncated_part_behind_a_legacy_marker_is_one_line(four_images: Path,
                                                              tmp_path: Path) -> None:
    """An empty (pre-digest) marker is accepted as it is; a part truncated behind it fails
    in one line naming the file, with exit code 5, not a traceback."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    part = JobDir(out).record_part("pool", (0, 1))
    done_marker(part).write_bytes(b"")
    part.write_bytes(part.read_bytes()[:40])
    with pytest.raises(StoreError) as failed:
        run_stages(spec, out)
    assert str(part) in _one_line(str(failed.value)) and failed.value.exit_code == 5


def test_stale_temporaries_are_removed_at_the_start_of_a_run(four_images: Path,
                                                            tmp_path: Path) -> None:
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    stale = out / "parts" / "pool" / ".0000000-0000001.jsonl.999.tmp"
    stale.write_text("half")
    run_stages(spec, out)
    assert not stale.exists()


# --- confined inputs --------------------------------------------------------------------


def _index_rows(root: Path) -> list[str]:
    return (root / "index.csv").read_text().splitlines()


def _add_rows(root: Path, names: list[str]) -> None:
    """Append copies of the first index row naming other image files."""
    lines = _index_rows(root)
    template = lines[1].split(",")
    rows = [",".join([name, *template[1:]]) for name in names]
    (root / "index.csv").write_text("\n".join([*lines, *rows]) + "\n")


def _reasons(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    return {row["image"]: row["reason"] for row in rows}


def test_paths_that_escape_the_dataset_root_are_bad_samples(four_images: Path,
                                                            tmp_path: Path) -> None:
    """Rows naming ../ paths, absolute paths and a symlink out of the root are bad samples
    'outside the dataset root', whether the file exists or not; the other images give the
    clean run's records. With follow_symlinks the symlinked image is read."""
    clean = _clean(_spec(four_images), tmp_path)
    secret = tmp_path / "secret.png"
    shutil.copy(four_images / "images" / "fix" / "img_0.png", secret)
    (four_images / "images" / "fix" / "link.png").symlink_to(secret)
    escaping = ["../../secret.png", "../../missing.png", str(secret), "fix/link.png"]
    _add_rows(four_images, escaping)
    out = tmp_path / "out"
    run_stages(_spec(four_images), out)
    reasons = _reasons(out)
    for name in escaping:
        assert reasons[name] == f"{name}: {OUTSIDE_ROOT}"
    assert (out / "records" / "pool.jsonl").read_bytes() == clean["records/pool.jsonl"]
    followed = tmp_path / "followed"
    run_stages(_spec(four_images, follow_symlinks=True), followed)
    assert "fix/link.png" not in _reasons(followed)
    assert _reasons(followed)["../../secret.png"].endswith(OUTSIDE_ROOT)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A small PNG that declares ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def test_decompression_bombs_are_bad_samples(four_images: Path, tmp_path: Path) -> None:
    """A 30000 x 30000 PNG of a few hundred bytes, as an image and as a mask, is a bad
    sample each; the job finishes with the clean run's records."""
    clean = _clean(_spec(four_images), tmp_path)
    fix = four_images / "images" / "fix"
    _png_header_only(fix / "bomb.png", 30000, 30000)
    _add_rows(four_images, ["fix/bomb.png"])
    lines = _index_rows(four_images)
    shutil.copy(fix / "img_0.png", fix / "ok.png")
    lines.append(lines[1].replace("fix/img_0.png", "fix/ok.png", 1)
                 .replace("fix/img_0_color_0.png", "fix/bomb.png"))
    (four_images / "index.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_stages(_spec(four_images), out)
    reasons = _reasons(out)
    assert "decompression bomb" in reasons["fix/bomb.png"]
    assert "unreadable mask fix/bomb.png" in reasons["fix/ok.png"]
    assert (out / "records" / "pool.jsonl").read_bytes() == clean["records/pool.jsonl"]


def test_any_decoder_failure_is_a_bad_sample() -> None:
    """MemoryError and unexpected exceptions while decoding become BadSampleError."""
    for raised in (MemoryError(), RuntimeError("codec bug"), KeyError("x")):
        with pytest.raises(BadSampleError, match=r"unreadable image a\.png"), \
                decoding("image a.png"):
            raise raised


def test_markup_in_labels_is_printed_literally(four_images: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A concept called '[/bold]red' is printed as written (rich markup is escaped)."""
    labels = four_images / "label.csv"
    labels.write_text(labels.read_text().replace(",red,", ",[/bold]red,"))
    out = tmp_path / "out"
    summary = run_stages(_spec(four_images), out)
    print_summary(summary, str(out))
    assert "[/bold]red" in capsys.readouterr().out


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Nine levels of ten aliases (10^9 strings if expanded) are refused in one line."""
    levels = ['a0: &a0 ["lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    job = tmp_path / "bomb.yaml"
    job.write_text("\n".join(["bomb:", *(f"  {line}" for line in levels)]) + "\n")
    with pytest.raises(SpecError) as refused:
        load_spec(job)
    assert "YAML alias (*a0" in _one_line(str(refused.value))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"model": {"name": "resnet18"}, "layers": ["layer4"],
                                     "dataset": {"root": "x"}}))
    assert load_spec(plain).layers == ("layer4",)


# --- interruptions, Ray and the CLI -------------------------------------------------------


def test_ctrl_c_marks_the_run_interrupted(four_images: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a stage: the run is 'interrupted' (status says so), the lock is released,
    and a resume gives the clean run's records; the CLI prints how to resume, exit 130."""
    out, spec = tmp_path / "out", _spec(four_images)
    calls = []

    def interrupting(stage: Any, plan: Any, ctx: Any, on_done: Any) -> None:
        calls.append(stage.name)
        if stage.name == "thresholds":
            raise KeyboardInterrupt
        execute_locally(stage, plan, ctx, on_done)

    with pytest.raises(KeyboardInterrupt):
        run_stages(spec, out, interrupting)
    assert "latest run: interrupted" in render_status(out)
    assert not (out / lock.LOCK_NAME).exists()
    run_stages(spec, out)
    assert _outputs(out) == _clean(spec, tmp_path)

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("ray_dissect.runtime.driver.run_job", ctrl_c)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(json.loads(spec.model_dump_json())))
    result = runner.invoke(cli.app, ["run", str(job), "--out", str(out)])
    assert result.exit_code == 130
    assert f"interrupted; resume with `ray-dissect resume {out}`" in result.output


def test_ray_start_up_failures_are_retried_then_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ray.init failing (e.g. timing out under load) is tried INIT_ATTEMPTS times, then
    ends in one StageError line; a later success is used."""
    import ray

    tries: list[dict[str, Any]] = []

    def failing(**kwargs: Any) -> None:
        tries.append(kwargs)
        raise TimeoutError("Timed out after 30 seconds\nwaiting for the GCS")

    monkeypatch.setattr(ray, "init", failing)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the shared test cluster aside
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    with pytest.raises(StageError) as failed, cluster.ray_session(None):
        pass
    assert len(tries) == cluster.INIT_ATTEMPTS
    assert "cannot start a local Ray cluster" in _one_line(str(failed.value))
    assert all(t["address"] == "local" for t in tries)


def test_submit_retries_the_jobs_apis_transient_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """'No available agent to submit job' (right after `ray start`) is retried; other
    errors are not."""
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    answers: list[Any] = [RuntimeError("Request failed with status code 500: No available "
                                       "agent to submit job"), RuntimeError("status code 503"),
                          "ok"]

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert submit._retrying(call) == "ok"

    def refused() -> str:
        raise RuntimeError("status code 400: bad runtime_env")

    with pytest.raises(RuntimeError, match="400"):
        submit._retrying(refused)


def test_a_disk_that_fills_while_the_driver_marks_work_done_is_one_line(
        four_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills when the driver writes a done marker (and stays full while the failure
    would be recorded in the manifest): one StoreError naming the marker, not an OSError
    traceback; once space is back the run resumes to the clean run's records."""
    import errno

    out, spec = tmp_path / "out", _spec(four_images)
    real, full = Path.write_bytes, []

    def filling(self: Path, data: bytes) -> int:  # full from the first done marker on
        if ".done." in self.name:
            full.append(self.name)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    with pytest.raises(StoreError) as failed:
        run_stages(spec, out)
    monkeypatch.undo()
    message = _one_line(str(failed.value))
    assert ".done" in message and "No space left on device" in message
    assert failed.value.exit_code == 5
    assert not list(out.rglob("*.tmp"))
    run_stages(spec, out)
    assert _outputs(out) == _clean(spec, tmp_path)


def test_a_full_disk_while_writing_the_report_exits_5(four_images: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while the report is written is a StoreError (exit 5, unwritable output)."""
    import contextlib
    import errno

    from ray_dissect.runtime import report

    out = tmp_path / "out"
    run_stages(_spec(four_images), out)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "build_report", full)
    monkeypatch.setattr(report, "ray_session", lambda address: contextlib.nullcontext())
    result = runner.invoke(cli.app, ["report", str(out)])
    assert result.exit_code == 5
    assert "No space left on device" in _one_line(result.output)
    assert not (out / lock.LOCK_NAME).exists()


@pytest.mark.ray
def test_a_stray_ray_start_address_file_is_not_joined(four_images: Path, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """`run` without --address starts a private cluster even when a `ray start` left its
    address file in Ray's temp directory (here a private one, not the shared /tmp/ray)."""
    temp = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))  # Ray's socket paths are short
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    (temp / "ray").mkdir(parents=True)
    (temp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(json.loads(_spec(four_images).model_dump_json())))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"TMPDIR": str(temp), "RAY_TMPDIR": str(temp), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "ray_dissect", "run", str(job), "--out",
                           str(tmp_path / "out"), "--no-report"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _outputs(tmp_path / "out") == _clean(_spec(four_images), tmp_path)

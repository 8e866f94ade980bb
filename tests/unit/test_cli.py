"""The CLI refuses bad specs in one line, with a non-zero exit, before any work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from fixtures.s3 import LocalS3
from typer.testing import CliRunner

from ray_dissect.cli import app

runner = CliRunner()


def _job(tmp_path: Path, root: Path, **over: object) -> Path:
    spec = {"model": {"name": "resnet18"}, "layers": ["layer4"],
            "dataset": {"root": str(root)}, **over}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(("over", "needle", "code"), [
    ({"method": {"quantile": -1}}, "field 'method.quantile'", 2),
    ({"surprise": True}, "field 'surprise'", 2),
    ({"model": {"name": "resnet1000"}}, "field 'model.name'", 2),
    ({"layers": ["layer9"]}, "field 'layers': 'layer9'", 2),
    ({"layers": ["layer4.1.conv3"]}, "(did you mean 'layer4.1.conv", 2),
])
def test_bad_spec_fails_fast(tmp_path: Path, four_images: Path, over: dict, needle: str,
                             code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line on stderr naming the field, exit code, no output directory; schema and
    model errors (layers, with a close match) before any Ray session starts."""
    import ray_dissect.runtime.driver as driver

    sessions: list[str] = []

    @contextmanager
    def fake_session(*_: object, **__: object) -> Iterator[None]:
        sessions.append("open")
        try:
            yield
        finally:
            sessions.append("closed")

    monkeypatch.setattr(driver, "ray_session", fake_session)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the CLI would start a local cluster
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(_job(tmp_path, four_images, **over)),
                                 "--out", str(out)])
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Hint:" in lines[0]
    assert not out.exists()
    assert sessions == []


def test_missing_dataset_root(tmp_path: Path) -> None:
    """A missing dataset root exits 3 with a hint to make-dataset."""
    result = runner.invoke(app, ["run", str(_job(tmp_path, tmp_path / "nope")), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 3 and "make-dataset" in result.stderr


def test_layers_lists_shapes() -> None:
    """`layers --model` prints module names with output shapes."""
    result = runner.invoke(app, ["layers", "--model", "resnet18"])
    assert result.exit_code == 0
    assert any(line.split()[0] == "layer4" and line.endswith("512 x 7 x 7")
               for line in result.stdout.splitlines())


def test_layers_flags_modules_that_run_twice_and_suggests_names() -> None:
    """torchvision's BasicBlock calls its one ReLU module twice per forward: `layers` says
    so on that module's line only; a mistyped pattern gets its close match."""
    import torch
    from torchvision.models import resnet18

    calls: dict[str, int] = {}
    net = resnet18().eval()
    for name, module in net.named_modules():
        module.register_forward_hook(lambda *_a, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 64))
    twice = {n for n, k in calls.items() if n and k == 2}
    assert "layer1.0.relu" in twice
    result = runner.invoke(app, ["layers", "--model", "resnet18", "--size", "64"])
    flagged = {line.split()[0] for line in result.stdout.splitlines() if "runs 2x" in line}
    assert result.exit_code == 0 and flagged == twice
    typo = runner.invoke(app, ["layers", "--model", "resnet18", "--select", "layr4.1"])
    assert typo.exit_code != 0 and "did you mean 'layer4.1'?" in typo.stderr


def test_layers_marks_what_patterns_select(tmp_path: Path) -> None:
    """`layers JOB.yaml` marks the modules its patterns select and counts them."""
    job = _job(tmp_path, tmp_path, layers=["layer4.*", "type:AdaptiveAvgPool2d"])
    result = runner.invoke(app, ["layers", str(job)])
    assert result.exit_code == 0, result.output
    marked = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("* ")]
    assert marked == ["layer4.0", "layer4.1", "avgpool"]
    assert "3 layers selected by layer4.*, type:AdaptiveAvgPool2d" in result.stdout


def test_schema_command_writes_files(tmp_path: Path) -> None:
    """`schema --out DIR` writes one file per record type and the job spec."""
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"job_spec.schema.json",
                                                     "unit_record.schema.json"}


def test_status_of_a_job_directory(tmp_path: Path) -> None:
    """`status DIR` prints the stages; a directory without a manifest exits 5."""
    from ray_dissect.job.manifest import write_manifest
    from ray_dissect.pipeline.table import job_manifest
    from ray_dissect.spec import parse_spec

    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"root": "/x"}})
    write_manifest(tmp_path, job_manifest(spec, "0.1.0"))
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 0 and "concepts" in result.stdout and "scoring" in result.stdout
    missing = runner.invoke(app, ["status", str(tmp_path / "nope")])
    assert missing.exit_code == 5 and "no manifest" in missing.stderr


def test_resume_refuses_a_non_job_directory(tmp_path: Path) -> None:
    """`resume` on a directory without spec.json exits 2 with a hint."""
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a job directory" in result.stderr


def test_status_and_resume_take_uris(local_s3: LocalS3) -> None:
    """`status`/`resume` read a job directory on an object store like a local one."""
    from ray_dissect.job.manifest import write_manifest
    from ray_dissect.pipeline.table import job_manifest
    from ray_dissect.spec import parse_spec
    from ray_dissect.storage import location

    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"root": "s3://data/x"}})
    uri = local_s3.bucket("cli") + "/job"
    write_manifest(location(uri), job_manifest(spec, "0.1.0"))
    result = runner.invoke(app, ["status", uri, "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 0 and result.stdout.startswith(f"job {uri}  spec ")
    missing = runner.invoke(app, ["status", uri + "-nope"])
    assert missing.exit_code == 5 and "no manifest" in missing.stderr
    refused = runner.invoke(app, ["resume", uri])  # a manifest but no spec.json
    assert refused.exit_code == 2 and f"'{uri}' is not a job directory" in refused.stderr
    bad = runner.invoke(app, ["status", "nosuchfs://x/y"])
    assert bad.exit_code == 5 and "install the fsspec implementation" in bad.stderr


@pytest.fixture(scope="module")
def clustered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small clustered job, run in-process."""
    from fixtures.report_job import dataset, run_job

    root = tmp_path_factory.mktemp("cli")
    return run_job(dataset(root / "ds", 16), root / "job", "color_levels", ["out"],
                   kind="clustered", clusters=3, length=2, beam=3)


def test_report_options_are_checked_before_ray(clustered_dir: Path) -> None:
    """Bad report options exit 2 with one line, before any Ray session starts."""
    bad = runner.invoke(app, ["report", str(clustered_dir), "--unit-pages", "some"])
    assert bad.exit_code == 2 and "--unit-pages" in bad.stderr
    style = runner.invoke(app, ["report", str(clustered_dir), "--style", "fancy"])
    assert style.exit_code == 2 and "unknown report style" in style.stderr
    assert "--no-report" in runner.invoke(app, ["run", "--help"]).stdout
    assert "--no-report" in runner.invoke(app, ["resume", "--help"]).stdout


def test_summary_shows_formulas(clustered_dir: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """For a clustered job, `run` prints the most frequent formulas and the best by IoU."""
    from ray_dissect.cli.output import print_summary as _print_summary
    from ray_dissect.results import open_job

    monkeypatch.setenv("COLUMNS", "400")
    job = open_job(clustered_dir)
    _print_summary(job.summary, str(clustered_dir))
    out = capsys.readouterr().out
    (unit, best), = job.best_explanations("out", 1)
    assert f"{best.text} (unit {unit}, IoU {best.iou:.3f})" in out
    top = job.summary.layers[0].top_formulas[0]
    assert f"{top.text} ({top.ranges})" in out and "best formula by IoU" in out


def test_summary_is_whole_without_a_terminal(clustered_dir: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Printed to a pipe (no terminal, 80 columns assumed), the table keeps every row on
    one line: layer names and formulas whole, nothing wrapped or cut."""
    from ray_dissect.cli.output import print_summary as _print_summary
    from ray_dissect.results import open_job

    monkeypatch.delenv("COLUMNS", raising=False)
    job = open_job(clustered_dir)
    _print_summary(job.summary, str(clustered_dir))
    lines = capsys.readouterr().out.splitlines()
    (unit, best), = job.best_explanations("out", 1)
    row = next(line for line in lines if line.lstrip("│ ").startswith("out "))
    assert f"{best.text} (unit {unit}, IoU {best.iou:.3f})" in row
    assert max(len(line) for line in lines) > 80 and "…" not in "".join(lines)


def test_make_dataset_vocabulary(tmp_path: Path) -> None:
    """`make-dataset --vocabulary broden` writes 1,197 labels; an unknown vocabulary exits 2."""
    args = ["make-dataset", "--images", "3", "--image-size", "32", "--mask-size", "16"]
    result = runner.invoke(app, [*args, str(tmp_path / "b"), "--vocabulary", "broden"])
    assert result.exit_code == 0
    labels = (tmp_path / "b" / "label.csv").read_text().splitlines()
    assert len(labels) == 1 + 1197
    bad = runner.invoke(app, [*args, str(tmp_path / "x"), "--vocabulary", "imagenet"])
    assert bad.exit_code == 2 and "unknown vocabulary" in bad.stderr


@pytest.mark.parametrize(("classifier", "needle"), [
    ("fcc", "'fcc' is not a module of the model (did you mean 'fc'?)"),
    ("layer4", "'layer4' has no (classes, units) weight"),
])
def test_bad_classifier_is_refused_before_any_work(tmp_path: Path, four_images: Path,
                                                   classifier: str, needle: str) -> None:
    """model.classifier is checked with the layers: a typo gets its close match, a module
    without a 2-D weight is refused; nothing is written."""
    spec = _job(tmp_path, four_images, model={"name": "resnet18", "classifier": classifier})
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and needle in result.stderr
    assert not (tmp_path / "out").exists()

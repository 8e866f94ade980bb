"""Every code example of the README and the docs is checked or run.

- ``yaml`` blocks are job specs validated by the real loader: a block with a ``name`` is a
  whole job; one without is a part of one, merged into a minimal spec; the README's annotated
  spec is ``jobs/demo.yaml`` field for field;
- ``python`` blocks run, in a directory where ``runs/demo`` is a job of the demo model on a
  small generated dataset, run in-process; the documented pandas columns and dtypes are the
  real ones;
- ``bash`` blocks and inline `ray-dissect ...` signatures: every ``ray-dissect`` command names
  a real subcommand and real options, every ``make`` target and ``benchmarks/`` script and
  option exists, a spec a ``submit`` example names has no relative data path; the
  ``ray-dissect layers`` examples run;
- every attribution example runs: its layer and head must work for every method it lists (the
  README once shipped one that failed on the demo model after extraction).
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from fixtures.docs_blocks import ROOT, Block, blocks, pages

from ray_dissect.cli import app
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import JobSpec, load_spec, parse_spec
from ray_dissect.storage import arrays

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"],
        "dataset": {"format": "broden", "root": "data"}}
"""The minimal spec a fragment (a yaml block without ``name``) is merged into."""
SMALL = {"actors": 1, "batch_size": 4, "shard_images": 8}


CHECKED = {"yaml", "python", "bash"}
"""The languages of examples, each checked by a test here; ``text`` marks listings."""


def test_every_fenced_block_says_what_it_is() -> None:
    """An example in another language (or none) would be checked by nothing."""
    others = [f"{b.id} ({b.lang!r})" for b in blocks(None) if b.lang not in CHECKED | {"text"}]
    assert not others, "use yaml, python, bash or text"


def _spec_of(block: Block) -> JobSpec:
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block.id}: not a mapping"
    if "name" not in data:
        data = {**BASE, **data}
    return parse_spec(data, source=block.id)


@pytest.mark.parametrize("block", blocks("yaml"), ids=lambda b: b.id)
def test_yaml_examples_are_valid_job_specs(block: Block) -> None:
    spec = _spec_of(block)
    assert spec.layers


def _commands(text: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, comments dropped,
    leading ``NAME=value`` assignments skipped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def _check_cli(words: list[str], line: str) -> None:
    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), "the CLI is a command group"
    command = group.commands.get(words[1])
    assert command is not None, f"unknown subcommand in {line!r}"
    options = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
    for word in words[2:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("-"):
            assert flag in options, f"{flag} is not an option of {words[1]} ({line!r})"


def _check_benchmark(words: list[str]) -> None:
    """A ``python benchmarks/x.py --flag ...`` line: the script exists and parses each flag."""
    script = ROOT / words[1]
    assert script.is_file(), f"no benchmark {words[1]}"
    source = script.read_text()
    for flag in (w.split("=", 1)[0] for w in words[2:] if w.startswith("--")):
        assert f'"{flag}"' in source, f"{words[1]} has no option {flag}"


def _check_submittable(path: Path) -> None:
    """A spec a docs example submits from this repository: submit refuses relative data paths
    (the cluster does not share this machine's directory), so its dataset root is absolute or
    a URI."""
    root = str((yaml.safe_load(path.read_text()).get("dataset") or {}).get("root", ""))
    assert root.startswith("/") or "://" in root, f"submit refuses {path.name}: root {root!r}"


BASH = [b for b in blocks("bash") if re.search(r"ray-dissect|make |benchmarks/", b.text)]


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.id)
def test_shell_examples_use_real_commands_and_options(block: Block) -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    for words in _commands(block.text):
        if words[0] == "ray-dissect":
            _check_cli(words, " ".join(words))
            if words[1] == "submit" and (ROOT / words[2]).is_file():
                _check_submittable(ROOT / words[2])
        elif words[0] == "python" and words[1].startswith("benchmarks/"):
            _check_benchmark(words)
        elif words[0] == "make":
            assert set(words[1:]) <= targets, f"{block.id}: unknown make target in {words}"


@pytest.fixture(scope="module")
def demo_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NetDissect job of the demo model (``_blocks.10``, ``_bn1``) on 8 generated images,
    in-process: what ``runs/demo`` holds in the Python examples."""
    base = tmp_path_factory.mktemp("docs_demo")
    data = generate_dataset(base / "ds", 8, seed=0, image_size=64, mask_size=16)
    demo = yaml.safe_load((ROOT / "jobs" / "demo.yaml").read_text())
    spec = parse_spec({**demo, "dataset": {"format": "broden", "root": str(data)},
                       "resources": SMALL})
    run_stages(spec, base / "runs" / "demo")
    return base


def _squeezed(text: str) -> str:
    return " ".join(text.split())


def _excerpt_of_source(block: Block) -> bool:
    """Whether the block quotes the package's own code verbatim (whitespace aside), as the
    architecture page quotes a stage's declaration: then it is true to the code as it is."""
    code = _squeezed(block.text)
    return any(code in _squeezed(path.read_text())
               for path in (ROOT / "ray_dissect").rglob("*.py"))


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.id)
def test_python_examples_run(block: Block, demo_job: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each python block runs, unless it is a verbatim excerpt of the package's source."""
    if _excerpt_of_source(block):
        return
    monkeypatch.chdir(demo_job)
    for name in set(re.findall(r"open_job\(\"runs/([\w-]+)\"\)", block.text)) - {"demo"}:
        # another job directory an example opens (runs/cce): the demo job stands in, so the
        # calls are checked to exist and run on a real job directory
        if not (demo_job / "runs" / name).exists():
            (demo_job / "runs" / name).symlink_to(demo_job / "runs" / "demo")
    script = tmp_path / "example.py"
    script.write_text(block.text)
    runpy.run_path(str(script), run_name="__main__")


def _attribution_blocks() -> list[Block]:
    return [b for b in blocks("yaml")
            if "attribution" in (yaml.safe_load(b.text) or {}).get("analyses", {})]


def test_the_attribution_examples_are_found() -> None:
    paths = {b.path for b in _attribution_blocks()}
    assert {"README.md", os.path.join("docs", "spec.md")} <= paths


def _distinct_attributions() -> list[Block]:
    """The attribution examples, one per distinct (model, attribution) pair."""
    seen: dict[str, Block] = {}
    for b in _attribution_blocks():
        spec = _spec_of(b)
        seen.setdefault(repr((spec.model.name, spec.model.factory, spec.analyses.attribution)), b)
    return list(seen.values())


@pytest.mark.parametrize("block", _distinct_attributions(), ids=lambda b: b.id)
def test_attribution_examples_run(block: Block, tmp_path: Path) -> None:
    """The example's attribution (only: receptive fields and PRISM are slow) on 8 generated
    images; a torchvision model keeps its initial weights (its layers and head are what the
    example must get right, and nothing is downloaded)."""
    spec = _spec_of(block)
    data = generate_dataset(tmp_path / "ds", 8, seed=1, image_size=64, mask_size=16)
    wanted: dict[str, Any] = spec.model_dump(mode="json")
    if spec.model.name is not None:
        wanted["model"]["weights"] = "none"
    wanted.update(dataset={"format": "broden", "root": str(data)}, resources=SMALL,
                  studies={}, analyses={"attribution": wanted["analyses"]["attribution"]})
    run_stages(parse_spec(wanted), tmp_path / "out")
    store = tmp_path / "out" / "attribution.zarr"
    for method in spec.analyses.attribution.methods:  # type: ignore[union-attr]
        maps = arrays.open_array(store, method)[:]
        assert maps.shape[0] == 8 and (maps != 0).any(), method


def _documented_columns() -> list[str]:
    text = (ROOT / "docs" / "results.md").read_text()
    section = text.split("## The pandas columns", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)


def test_the_documented_pandas_columns_are_the_real_ones(demo_job: Path) -> None:
    from ray_dissect import open_job

    frame = open_job(demo_job / "runs" / "demo").to_pandas("_bn1")
    assert _documented_columns() == list(frame.columns)
    dtypes = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|",
                             (ROOT / "docs" / "results.md").read_text(), re.MULTILINE))
    assert dtypes == {c: str(t) for c, t in frame.dtypes.items()}


def test_inline_commands_use_real_subcommands_and_options() -> None:
    """`ray-dissect run JOB.yaml --out DIR [--force]` in running text, as in the blocks."""
    spans = [m for page in pages() for m in re.findall(r"`ray-dissect ([a-z-]+)([^`]*)`",
                                                       page.read_text())]
    assert len(spans) > 20
    for command, rest in spans:
        words = [w.strip("[]|") for w in re.split(r"[\s|]+", rest)]
        _check_cli(["ray-dissect", command, *[w for w in words if w.startswith("--")]],
                   f"ray-dissect {command}{rest}")


def test_the_readme_spec_is_the_demo_job() -> None:
    """The README shows `jobs/demo.yaml` annotated: the same spec, field for field."""
    (shown,) = [b for b in blocks("yaml")
                if b.path == "README.md" and "name: demo-efficientnet-lite0" in b.text]
    assert _spec_of(shown) == load_spec(ROOT / "jobs" / "demo.yaml")


LAYERS = sorted({" ".join(w) for b in blocks("bash") for w in _commands(b.text)
                 if w[:2] == ["ray-dissect", "layers"] and not any(x.isupper() for x in w)})


@pytest.mark.parametrize("command", LAYERS)
def test_layers_examples_run(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first command a new user runs: each `ray-dissect layers` example, in-process."""
    from typer.testing import CliRunner

    monkeypatch.chdir(ROOT)
    done = CliRunner().invoke(app, shlex.split(command)[1:])
    assert done.exit_code == 0, done.output
    assert re.search(r"^\s*\S+\s+\d+( x \d+)*$", done.output, re.MULTILINE), done.output

"""The documentation site builds strictly, offline, with nothing fetched from elsewhere, and
its job spec reference lists every field of the JSON Schema."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.docs_blocks import ROOT, pages

SCHEMA = ROOT / "schemas" / "job_spec.schema.json"
EXTERNAL = re.compile(r"<(?:link|script|img|iframe|source)\b[^>]*?\b(?:href|src)=\"?(?:https?:)?//",
                      re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_page_is_built(site: Path) -> None:
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    built = {p.parent.name if p.parent != site else "index" for p in site.rglob("index.html")}
    assert pages - {"index"} <= built


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    offenders = {str(p.relative_to(site)): EXTERNAL.findall(p.read_text())
                 for p in site.rglob("*.html")}
    assert not {k: v for k, v in offenders.items() if v}
    css = " ".join(p.read_text() for p in site.rglob("*.css"))
    assert "fonts.googleapis" not in css and "@import url(http" not in css


def test_the_spec_reference_has_every_field_of_the_schema(site: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    page = (site / "spec" / "index.html").read_text()
    models = [schema, *schema["$defs"].values()]
    fields = [(m["title"], name, prop) for m in models for name, prop in m["properties"].items()]
    assert len(fields) > 100
    missing = [f"{title}.{name}" for title, name, _ in fields
               if f'id="{title.lower()}.{name}"' not in page]
    assert not missing
    undescribed = [f"{title}.{name}" for title, name, prop in fields
                   if not prop.get("description", "").strip()]
    assert not undescribed, "give these spec fields a docstring"


def _slugs(page: Path) -> set[str]:
    """The heading anchors of a page, as MkDocs' toc makes them."""
    titles = re.findall(r"^#+ (.+?)\s*$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())
            for title in titles}


def test_the_readme_links_only_to_pages_and_sections_that_exist() -> None:
    """GitHub shows the README without the site's strict build: its links are checked here."""
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", (ROOT / "README.md").read_text())
    assert len(links) > 10
    assert all((ROOT / link).exists() for link, _ in links)
    assert all(anchor in _slugs(ROOT / link) for link, anchor in links if anchor)


def test_every_file_the_docs_name_exists() -> None:
    """Paths such as `ray_dissect/pipeline/table.py` or `benchmarks/bench_job.py` in the README
    and the pages name files of this repository (modules move; the docs must follow)."""
    text = "\n".join(page.read_text() for page in pages())
    named = set(re.findall(r"`((?:ray_dissect|benchmarks|tests|schemas|jobs|deploy)/[\w./-]*\w)`?",
                           text))
    assert len(named) > 10
    assert not sorted(p for p in named if not (ROOT / p).exists())
    modules = set(re.findall(r"`((?:\w+/)+\w+\.py)\b", text)) - named
    assert not sorted(m for m in modules
                      if not any((base / m).exists() for base in (ROOT, ROOT / "ray_dissect")))


def _hook() -> Any:
    spec = importlib.util.spec_from_file_location(
        "spec_reference", ROOT / "docs" / "_hooks" / "spec_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(model: str, field: str) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    models = {schema["title"]: schema, **schema["$defs"]}
    (row,) = [r for r in _hook().field_rows(models[model]) if f'.{field}"></a>' in r]
    return [cell.strip() for cell in row.strip("|").split(" | ")]


def test_the_reference_rows_give_type_default_and_constraints() -> None:
    """Hand-checked against ray_dissect/spec: batch_size is an int in (0, 4096], 32 by default;
    quantile a float in (0, 1), 0.005; layers required; gpus_per_actor 'auto' or a number."""
    assert _row("ResourceSpec", "batch_size")[1:4] == ["integer", "`32`", "> 0, <= 4096"]
    assert _row("NetDissectMethod", "quantile")[1:4] == ["number", "`0.005`", "> 0, < 1"]
    assert _row("JobSpec", "layers")[1:4] == ["list of string", "**required**",
                                               "at least 1 items"]
    assert _row("ResourceSpec", "gpus_per_actor")[1:3] == ['`"auto"` \\| number', '`"auto"`']
    assert _row("ModelSpec", "kwargs")[1:3] == ["object", "`{}`"]  # default_factory=dict

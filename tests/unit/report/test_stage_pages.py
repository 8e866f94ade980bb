"""The report knows no stage: the pages stages add come in as data (nav entry + writer), and
the nav of every page lists those the job has, in their order and on their line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ray_dissect.report.build import build_report
from ray_dissect.report.pages import ReportPage, Site
from ray_dissect.results import JobResults


def _writer(href: str, text: str) -> Callable[[Site, JobResults], None]:
    def write(site: Site, results: JobResults) -> None:
        site.write(href, f"<p>{text} of {results.spec.name}</p>\n")

    return write


def _refuse(site: Site, results: JobResults) -> None:
    raise AssertionError("a page the job does not have is not written")


def _nav(html: str) -> str:
    found = re.search(r'<nav aria-label="report">(.*?)</nav>', html, re.S)
    assert found is not None
    return found.group(1)


def test_given_pages_are_linked_and_written(clustered: JobResults, tmp_path: Path) -> None:
    """A present page is written and linked (a ``main`` one before about, a ``stages`` one on
    the next line) from the index and from unit pages; an absent one is neither."""
    pages = (
        ReportPage(href="toy.html", title="toy", line="stages", present=lambda r: True,
                   write=_writer("toy.html", "toy")),
        ReportPage(href="gone.html", title="gone", line="stages", present=lambda r: False,
                   write=_refuse),
        ReportPage(href="lead.html", title="lead", line="main", present=lambda r: True,
                   write=_writer("lead.html", "lead")),
    )
    out = tmp_path / "site"
    build_report(clustered, out, pages=pages)
    name = clustered.spec.name
    assert (out / "toy.html").read_text() == f"<p>toy of {name}</p>\n"
    assert (out / "lead.html").exists() and not (out / "gone.html").exists()
    assert _nav((out / "index.html").read_text()) == (
        f'<a href="./index.html">{name}</a><a href="./concepts.html">concepts</a>'
        '<a href="./classes.html">classes</a><a href="./lead.html">lead</a>'
        '<a href="./about.html">about</a>\n<a href="./toy.html">toy</a>')
    unit = next((out / "units").rglob("*.html")).read_text()
    assert '<a href="../../toy.html">toy</a>' in _nav(unit) and "gone" not in _nav(unit)


def test_without_pages_the_nav_has_only_the_reports_own(clustered: JobResults,
                                                        tmp_path: Path) -> None:
    """``pages`` left out: the job's own pages, nothing else."""
    out = tmp_path / "site"
    build_report(clustered, out)
    assert re.findall(r'href="\./([a-z]+)\.html"', _nav((out / "index.html").read_text())) == [
        "index", "concepts", "classes", "about"]

"""What the report shows of the visualisation stages, and the receptive fields per unit.

The stages (``analyses:`` in the spec) write ``receptive_fields.zarr``, ``attribution.zarr`` and
``prism.zarr``; a stage counts as run when its arrays are completely written (every done
marker set). A job without them shows nothing of them: no nav link, no section, no file.

Receptive fields are per unit, so they are drawn by the render work unit
(:func:`ray_dissect.report.render.render_block`, in-process or a Ray task per block):
:class:`RFBlock` reads the block's maps once, writes per unit that has a field
``img/<layer>/<unit>_rf.png`` (a 64-px thumbnail for the layer page) and, with a unit page,
``units/<layer>/<unit>_rf.png`` (the map at input resolution), both heat PNGs of the map
min-max scaled for display (:mod:`ray_dissect.report.visual_tiles`). The attribution and PRISM
pages span images, not units: the driver writes them (:mod:`ray_dissect.report.visual_pages`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import StoreError
from ray_dissect.job.layout import layer_key
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report import plots
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.rf_panel import GAP, TILE, kept_maps, panel
from ray_dissect.report.views import url_key
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath, arrays

RF_THUMB = 64
RF_MIN_SHOWN = 112
"""Receptive-field maps smaller than this are shown enlarged (pixelated) on unit pages."""
RF_GRID = 256
"""Thumbnails on a layer page (the table lists every unit with a field)."""
RF_BINS = 20


def complete(store: AnyPath, name: str) -> bool:
    """Whether array ``name`` of a stage's store is completely written."""
    done = arrays.done_shards(store, name, verify=False)
    return bool(done.size and done.all())


def has_attribution(results: JobResults) -> bool:
    """The attribution stage ran (its ``targets`` array is complete)."""
    return (results.spec.analyses.attribution is not None
            and complete(results.job.attribution_zarr, "targets"))


def has_prism(results: JobResults) -> bool:
    """The PRISM stages ran (``rgb`` and ``variance`` complete)."""
    return results.spec.analyses.prism is not None and all(
        complete(results.job.prism_zarr, name) for name in ("rgb", "variance"))


def rf_layers(results: JobResults) -> tuple[str, ...]:
    """The layers whose receptive-field maps are complete."""
    spec = results.spec.analyses.receptive_fields
    if spec is None:
        return ()
    return tuple(layer for layer in spec.layers
                 if complete(results.job.receptive_fields_zarr, layer_key(layer)))


def rf_text(rec: UnitRecord) -> str:
    """The record's receptive field in words (size, centre offset, images averaged)."""
    rf = rec.receptive_field
    if rf is None:
        return ""
    dy, dx = (v + 0.0 for v in rf.offset) if rf.offset is not None else (0.0, 0.0)  # no -0.0
    offset = ("no centre (empty map)" if rf.offset is None
              else f"centre offset (dy, dx) = ({dy:.1f}, {dx:.1f}) px")
    return f"size {rf.size:.1f} px, {offset}, mean of {rf.images} top images"


class RFBlock:
    """The receptive-field maps of one render block's units (those whose record has one).

    Args:
        results: the job; layer: the layer; units: the block [u0, u1).
    """

    def __init__(self, results: JobResults, layer: str, units: tuple[int, int]) -> None:
        self.layer, self.key = layer, layer_key(layer)
        self.maps: dict[int, np.ndarray] = {}
        self.records = {r.unit: r for r in results.records(layer)[units[0]:units[1]]
                        if r.receptive_field is not None}
        if not self.records or layer not in rf_layers(results):
            self.records = {}
            return
        try:
            store = arrays.open_array(results.job.receptive_fields_zarr, self.key)
        except StoreError:
            self.records = {}
            return
        self.maps = self._read(store)
        self.uncut = self._uncut(results)
        ids = (min(self.records), max(self.records) + 1)  # the block's units, by index
        self.results, self.kept = results, kept_maps(results, layer, ids)

    def _read(self, store: Any) -> dict[int, np.ndarray]:
        """The block's units' maps from a store (units, H, W) indexed by unit (all units of
        the layer: a job with ``units:`` dissects only some)."""
        lo, hi = min(self.records), max(self.records) + 1
        block = store[lo:hi]
        return {u: np.asarray(block[u - lo], np.float32) for u in self.records}

    def _uncut(self, results: JobResults) -> dict[int, np.ndarray]:
        """The maps without the seed's cut (compat jobs only; ``{}`` otherwise)."""
        if not any(r.receptive_field and r.receptive_field.uncut_size is not None
                   for r in self.records.values()):
            return {}
        return self._read(arrays.open_array(results.job.receptive_fields_zarr,
                                            f"{self.key}+uncut"))

    def digest(self) -> str | None:
        """A digest of the block's maps and fields (None without any): part of the block's
        done-marker digest, so a changed map redraws the block."""
        if not self.maps:
            return None
        h = hashlib.sha256()
        for u in sorted(self.maps):
            h.update(np.ascontiguousarray(self.maps[u]).tobytes())
            if u in self.uncut:
                h.update(np.ascontiguousarray(self.uncut[u]).tobytes())
            if u in self.kept:
                h.update(np.ascontiguousarray(self.kept[u].maps).tobytes())
            h.update(self.records[u].model_dump_json().encode())
        return h.hexdigest()[:16]

    def write(self, out: AnyPath, pages: dict[int, bool]) -> None:
        """Write every map's thumbnail, and the full map of the units with a page."""
        for u, field in self.maps.items():
            shown = vt.display(field)
            _write(out, f"img/{self.key}/{u}_rf.png", vt.heat_png(vt.thumbnail(shown, RF_THUMB)))
            if pages.get(u):
                _write(out, f"units/{self.key}/{u}_rf.png", vt.heat_png(shown))
            if pages.get(u) and u in self.uncut:
                _write(out, f"units/{self.key}/{u}_rf_uncut.png",
                       vt.heat_png(vt.display(self.uncut[u])))
            if pages.get(u) and u in self.kept:
                _write(out, f"units/{self.key}/{u}_rf_panel.png", vt.rgb_png(
                    panel(self.results, self.kept[u], self.records[u].receptive_field)))

    def _panel_size(self, unit: int) -> dict[str, int]:
        """The panel's kept images and its pixel size ({} without a panel)."""
        if unit not in self.kept:
            return {}
        k = int((self.kept[unit].images >= 0).sum())
        return {"panel_images": k, "panel_width": k * TILE + (k - 1) * GAP,
                "panel_height": 3 * TILE + 2 * GAP}

    def context(self, unit: int) -> dict[str, Any] | None:
        """What ``unit.html`` shows of the unit's field (None without one)."""
        if unit not in self.maps:
            return None
        h, w = self.maps[unit].shape
        scale = max(1, -(-RF_MIN_SHOWN // max(1, min(h, w))))
        rf = self.records[unit].receptive_field
        return {"src": f"{unit}_rf.png", "width": w * scale, "height": h * scale,
                "shape": f"{h} x {w}", "text": rf_text(self.records[unit]), "rf": rf,
                "uncut": f"{unit}_rf_uncut.png" if unit in self.uncut else None,
                "panel": f"{unit}_rf_panel.png" if unit in self.kept else None,
                **self._panel_size(unit),
                "uncut_size": f"{rf.uncut_size:.1f}" if rf and rf.uncut_size is not None
                else None, "warning": rf.warning if rf else None}


def _write(out: AnyPath, rel: str, data: bytes) -> None:
    path = out / rel
    storage.makedirs(path.parent)
    storage.write_bytes(path, data)


def rf_layer_context(results: JobResults, layer: str, pages: dict[int, str | None]
                     ) -> dict[str, Any] | None:
    """What ``layer.html`` shows of the layer's receptive fields: the size histogram, a grid
    of thumbnails (the first :data:`RF_GRID`) and a table; None when the stage did not run on
    this layer.

    Args:
        pages: unit -> its page's href from the layer page (None without a page).
    """
    if layer not in rf_layers(results):
        return None
    recs = [r for r in results.records(layer) if r.receptive_field is not None]
    if not recs:
        return None
    sizes = [float(r.receptive_field.size) for r in recs if r.receptive_field]
    counts, edges = plots.histogram(sizes, RF_BINS)
    svg = plots._hist_svg(counts, edges, f"Receptive-field size of {len(recs)} units "
                          f"(median {np.median(sizes):.1f} px)", [], "size (px)")
    rows = [(f"{a:.1f}", f"{b:.1f}", int(c)) for a, b, c in
            zip(edges, edges[1:], counts, strict=False)]
    key = url_key(layer)  # as written (layer_key), percent-encoded once more for a URL
    units = [{"unit": r.unit, "text": rf_text(r), "href": pages.get(r.unit),
              "size": f"{r.receptive_field.size:.1f}" if r.receptive_field else "",
              "thumb": f"../img/{key}/{r.unit}_rf.png"} for r in recs]
    return {"hist": plots.Plot(svg, ("from px", "to px", "units"), rows),
            "grid": units[:RF_GRID], "units": units, "thumb": RF_THUMB,
            "more": max(0, len(units) - RF_GRID)}

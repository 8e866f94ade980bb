"""The concept index, a compressed form of every label of every pixel.

No dense mask per concept is ever built. Instead every pixel gets the id of its *label set*:
all labels of all its layers plus the image's whole-image labels (scene, texture), with the
empty label removed and duplicates across layers merged (a pixel is in a concept when any layer
says so, as compexp and CCE do). Images have few distinct label sets, so the dataset becomes

- ``set_ids``: (N, sh, sw) uint32, a label-set id per pixel (stored in Zarr, shard-local ids);
- ``membership``: (n_sets, n_labels) sparse 0/1, which labels each set contains;
- a per-image histogram of set ids (``image_indptr``, ``image_sets``, ``image_counts``).

Any dataset-wide count then is a sparse product. For a binary mask B given as per-set pixel
counts b (n_sets,), ``b @ membership`` is |B and L| for every concept L at once; for a
formula F, evaluating F once per set gives its mask in set space. Ids are local to a shard of
images (so shards are built independently and deterministically) and made global by adding
``set_offsets[shard]`` and looking the result up in ``remap`` (identical sets of different
shards share one global id).

Size: label sets do not saturate as images grow, because every pixel's set carries its
image's whole-image labels (scene, texture). Measured on generated data (64-px images, 32-px
masks, ``benchmarks/bench_scale.py``): sets grow about as images^0.7 (Broden-shaped 1,197
concepts, 2k-32k images) to images^0.9 (the 112-concept default, 1k-8k), ~14 histogram
entries per image; the arrays cost ~0.35 KB per image (Broden's 63k images: ~22 MB).
Without the whole-image labels the pixel sets grow only about as images^0.5 (13,903 vs 36,910
sets at 8k Broden-shaped images), which is the way to a bounded set space if ever needed
(whole-image labels as a per-image table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ray_dissect import storage
from ray_dissect.concepts import set_kernels
from ray_dissect.concepts.cropped import read_labels
from ray_dissect.concepts.jit import kernel_name
from ray_dissect.datasets.base import BadSampleError, ConceptDataset, Vocabulary
from ray_dissect.spec import PreprocessSpec
from ray_dissect.storage import AnyPath


@dataclass(frozen=True)
class ShardIndex:
    """The concept index of one shard of images (local set ids; id 0 is the empty set).

    Attributes:
        set_ids: (n, sh, sw) uint32 local label-set id per pixel (0 for invalid images).
        set_indptr: (m + 1,) int64 CSR row pointers of the set table.
        set_labels: (nnz,) int32 labels of each set, ascending.
        image_indptr: (n + 1,) int64 CSR pointers of the per-image set histogram;
            image_sets (q,) int64 local ids; image_counts (q,) int64 pixel counts.
        valid: (n,) bool, False for samples whose labels could not be read.
        errors: (local image index, reason) for each invalid sample.
    """

    set_ids: np.ndarray
    set_indptr: np.ndarray
    set_labels: np.ndarray
    image_indptr: np.ndarray
    image_sets: np.ndarray
    image_counts: np.ndarray
    valid: np.ndarray
    errors: tuple[tuple[int, str], ...]


def canonical_label_rows(pixel: np.ndarray, whole: np.ndarray, width: int) -> np.ndarray:
    """Per-pixel label sets as canonical rows.

    Args:
        pixel: (K, sh, sw) int32 label layers; whole: (G,) int32 whole-image labels.
        width: row width W >= number of distinct labels any pixel can carry (K + G).

    Returns:
        (sh * sw, W) int32: each row holds the pixel's distinct nonzero labels ascending,
        left-padded with zeros, so equal sets give equal rows.
    """
    n_pix = pixel.shape[1] * pixel.shape[2]
    cols = [pixel.reshape(pixel.shape[0], n_pix).T, np.broadcast_to(whole, (n_pix, len(whole)))]
    rows = np.sort(np.concatenate(cols, axis=1), axis=1)
    if rows.shape[1] > 1:
        rows[:, 1:][rows[:, 1:] == rows[:, :-1]] = 0
        rows = np.sort(rows, axis=1)
    out = np.zeros((n_pix, width), dtype=np.int32)
    if rows.shape[1]:
        out[:, width - rows.shape[1]:] = rows
    return out


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                 0x94D049BB133111EB, 0xBF58476D1CE4E5B9], dtype=np.uint64)


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True, return_counts=True)``, but fast.

    Rows are keyed by a 64-bit mix of their values; the keys' grouping is verified against
    the rows themselves, and a (never observed) collision falls back to the exact slow path.
    The order of the unique rows is that of their keys (deterministic, not lexicographic).
    """
    uniq, inverse, counts = unique_columns(rows.T)
    return np.ascontiguousarray(uniq.T), inverse, counts


def unique_columns(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`unique_rows` of ``cols.T``, from the (width, n) columns: (width, u) distinct
    columns, (n,) int64 inverse, (u,) int64 counts.

    Works column-wise (no reduction along a short axis, no transposed copy): the keys are
    summed one value row at a time, consecutive columns with equal keys are merged into runs
    before the keys are sorted (a label map's pixels, row-major, come in runs of one tuple),
    and the grouping is verified one value row at a time. Same keys, order and results as
    grouping every column's key directly.
    """
    width, n = cols.shape
    mix = np.resize(_MIX, width) + np.arange(width, dtype=np.uint64) * np.uint64(2)
    if kernel_name() == "numba" and (found := set_kernels.unique_columns(cols, mix)) is not None:
        return found
    keys = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            keys += cols[j].astype(np.uint64) * mix[j]
        keys ^= keys >> np.uint64(29)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])[:n])
    _, first, run_of = np.unique(keys[starts], return_index=True, return_inverse=True)
    run_of = run_of.reshape(-1)
    lengths = np.diff(np.append(starts, n))
    inverse = np.repeat(run_of, lengths)
    uniq = cols[:, starts[first]]
    if not all(np.array_equal(uniq[j][inverse], cols[j]) for j in range(width)):
        rows, inverse, counts = np.unique(cols.T, axis=0, return_inverse=True,
                                          return_counts=True)
        return rows.T, inverse.reshape(-1), counts
    return uniq, inverse, np.bincount(run_of, weights=lengths, minlength=len(first)).astype(
        np.int64)


def pixel_label_sets(pixel: np.ndarray, whole: np.ndarray, width: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct label sets of one image, as ``unique_rows(canonical_label_rows(...))``.

    An image has few distinct (layer 1, ..., layer K) label tuples, so the tuples are made
    unique first and only those are canonicalised (sorting every pixel's row was most of the
    concepts stage's time); tuples with the same set are merged by a second ``unique_rows``
    over the canonical rows, which orders them as the per-pixel call does.

    Args:
        pixel: (K, sh, sw) int32 label layers; whole: (G,) int32 whole-image labels.
        width: as for :func:`canonical_label_rows`.

    Returns:
        (S, width) int32 canonical rows, (sh * sw,) int64 row of every pixel, (S,) int64
        pixel counts.
    """
    k, n_pix = pixel.shape[0], pixel.shape[1] * pixel.shape[2]
    tuples, pix_tuple, _ = unique_columns(pixel.reshape(k, n_pix))
    canon = canonical_label_rows(tuples.reshape(k, 1, tuples.shape[1]), whole, width)
    uniq, tuple_set, _ = unique_rows(canon)
    inverse = tuple_set[pix_tuple]
    return uniq, inverse, np.bincount(inverse, minlength=len(uniq))


def build_shard(dataset: ConceptDataset, start: int, stop: int,
                preprocess: PreprocessSpec | None = None) -> ShardIndex:
    """Decode the labels of images ``start:stop`` and compress them into a :class:`ShardIndex`
    (pixel labels cropped like the images when ``preprocess.resize`` is set)."""
    sh, sw = dataset.mask_shape
    decoded: list[tuple[np.ndarray, np.ndarray] | None] = []
    errors: list[tuple[int, str]] = []
    for local, index in enumerate(range(start, stop)):
        try:
            decoded.append(read_labels(dataset, index, preprocess))
        except BadSampleError as err:
            decoded.append(None)
            errors.append((local, str(err)))
    width = max([p.shape[0] + w.shape[0] for p, w in filter(None, decoded)] + [1])
    table: dict[bytes, int] = {np.zeros(width, np.int32).tobytes(): 0}
    rows_list: list[np.ndarray] = [np.zeros(width, np.int32)]
    set_ids = np.zeros((stop - start, sh, sw), dtype=np.uint32)
    indptr, img_sets, img_counts = [0], [], []
    for local, item in enumerate(decoded):
        if item is not None:
            uniq, inverse, counts = pixel_label_sets(item[0], item[1], width)
            ids = np.empty(len(uniq), dtype=np.int64)
            for k, row in enumerate(uniq):
                key = row.tobytes()
                if key not in table:
                    table[key] = len(rows_list)
                    rows_list.append(row)
                ids[k] = table[key]
            set_ids[local] = ids[inverse.reshape(-1)].reshape(sh, sw)
            img_sets.append(ids)
            img_counts.append(counts.astype(np.int64))
        indptr.append(indptr[-1] + (len(img_sets[-1]) if item is not None else 0))
    return _pack_shard(set_ids, rows_list, indptr, img_sets, img_counts, stop - start, errors)


def _pack_shard(set_ids: np.ndarray, rows_list: list[np.ndarray], indptr: list[int],
                img_sets: list[np.ndarray], img_counts: list[np.ndarray], n: int,
                errors: list[tuple[int, str]]) -> ShardIndex:
    labels = [row[row > 0] for row in rows_list]
    set_indptr = np.zeros(len(labels) + 1, dtype=np.int64)
    set_indptr[1:] = np.cumsum([len(x) for x in labels])
    valid = np.ones(n, dtype=bool)
    for local, _ in errors:
        valid[local] = False
    return ShardIndex(
        set_ids=set_ids, set_indptr=set_indptr,
        set_labels=np.concatenate(labels).astype(np.int32),
        image_indptr=np.asarray(indptr, dtype=np.int64),
        image_sets=np.concatenate(img_sets) if img_sets else np.zeros(0, np.int64),
        image_counts=np.concatenate(img_counts) if img_counts else np.zeros(0, np.int64),
        valid=valid, errors=tuple(errors))


@dataclass(frozen=True)
class ConceptIndex:
    """The dataset-wide concept index (everything but the per-pixel ids, which stay on disk).

    Attributes:
        vocab: the concept vocabulary.
        mask_shape: (sh, sw).
        shard_images: images per shard (the last shard may be shorter).
        set_offsets: (n_shards + 1,) int64 start of each shard's local ids in ``remap``.
        remap: (total local ids,) int64 global set id of ``set_offsets[shard] + local id``.
        membership: (n_sets, n_labels) CSR float64 0/1 matrix.
        image_indptr: (N + 1,) int64; image_sets (q,) int64 global ids; image_counts (q,) int64.
        valid: (N,) bool, samples whose labels were read.
    """

    vocab: Vocabulary
    mask_shape: tuple[int, int]
    shard_images: int
    set_offsets: np.ndarray
    remap: np.ndarray
    membership: sp.csr_matrix
    image_indptr: np.ndarray
    image_sets: np.ndarray
    image_counts: np.ndarray
    valid: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.valid)

    @property
    def n_sets(self) -> int:
        return int(self.membership.shape[0])

    def set_counts(self, valid: np.ndarray | None = None) -> np.ndarray:
        """(n_sets,) float64 pixel count of each label set over the (valid) images."""
        keep = self.valid if valid is None else (self.valid & valid)
        per_image = np.diff(self.image_indptr)
        weights = self.image_counts * np.repeat(keep, per_image)
        return np.bincount(self.image_sets, weights=weights, minlength=self.n_sets)

    def label_area(self, valid: np.ndarray | None = None) -> np.ndarray:
        """(n_labels,) float64: |L| in pixels for every concept, whole-image labels included."""
        return self.membership.T @ self.set_counts(valid)

    def global_set_ids(self, local: np.ndarray, start: int) -> np.ndarray:
        """Map (n, sh, sw) local ids of images ``start:start+n`` to int64 global ids."""
        return self.global_set_ids_at(local, start + np.arange(local.shape[0]))

    def global_set_ids_at(self, local: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Map (n, sh, sw) local ids of the given (n,) image indices to int64 global ids.

        Images of one shard (a scoring block is one) are looked up in that shard's slice of
        the remap table directly, without widening and offsetting every pixel's id first.
        """
        shard = np.asarray(images) // self.shard_images
        if len(shard) and (shard == shard[0]).all():
            first, stop = self.set_offsets[shard[0]], self.set_offsets[shard[0] + 1]
            return self.remap[first:stop][local]
        return self.remap[local.astype(np.int64) + self.set_offsets[shard][:, None, None]]


def merge_shards(vocab: Vocabulary, mask_shape: tuple[int, int], shard_images: int,
                 shards: list[ShardIndex]) -> ConceptIndex:
    """Combine per-shard indexes (in shard order) into one :class:`ConceptIndex`.

    Identical label sets of different shards get one global id (first occurrence order), so
    the index grows with the number of distinct label combinations, not with the dataset.
    The merge is vectorised: every shard's sets become padded rows of one (total local sets,
    W) int32 array grouped by :func:`unique_rows`, so no Python object per set is created.
    """
    sizes = [len(s.set_indptr) - 1 for s in shards]
    offsets = np.zeros(len(shards) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)
    rows = _padded_set_rows(shards)
    remap, first = _first_occurrence_ids(rows)
    uniq = rows[first]
    lengths = (uniq > 0).sum(axis=1)
    indptr = np.zeros(len(uniq) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(lengths)
    labels = uniq[uniq > 0].astype(np.int32)  # rows are left-padded: row order is kept
    membership = sp.csr_matrix((np.ones(len(labels)), labels, indptr),
                               shape=(len(uniq), vocab.size))
    img_indptr = np.concatenate([[0], np.cumsum(np.concatenate(
        [np.diff(s.image_indptr) for s in shards]))]).astype(np.int64)
    img_sets = np.concatenate([remap[s.image_sets + off]
                               for s, off in zip(shards, offsets, strict=False)])
    return ConceptIndex(vocab, mask_shape, shard_images, offsets, remap, membership, img_indptr,
                        img_sets.astype(np.int64),
                        np.concatenate([s.image_counts for s in shards]).astype(np.int64),
                        np.concatenate([s.valid for s in shards]))


def _padded_set_rows(shards: list[ShardIndex]) -> np.ndarray:
    """(total local sets, W) int32: each shard set's labels ascending, left-padded with 0.

    Filled shard by shard, so the index arrays' temporaries are one shard's size.
    """
    width = max([int(np.diff(s.set_indptr).max(initial=0)) for s in shards] + [1])
    rows = np.zeros((sum(len(s.set_indptr) - 1 for s in shards), width), dtype=np.int32)
    start = 0
    for shard in shards:
        lengths = np.diff(shard.set_indptr)
        row_of = np.repeat(np.arange(start, start + len(lengths)), lengths)
        col = (np.arange(len(shard.set_labels)) - np.repeat(shard.set_indptr[:-1], lengths)
               + np.repeat(width - lengths, lengths))
        rows[row_of, col] = shard.set_labels
        start += len(lengths)
    return rows


def _first_occurrence_ids(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal rows; ids count distinct rows in order of first appearance.

    Returns:
        ids: (n,) int64 id of each row; first: (n_distinct,) int64 index of each id's first row.
    """
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, inverse, _ = unique_rows(rows)
    first = np.full(int(inverse.max()) + 1, len(rows), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(rows), dtype=np.int64))
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].astype(np.int64), first[order]


def save_index(index: ConceptIndex, path: AnyPath) -> None:
    """Write the index arrays (not the vocabulary, which is re-read from the dataset)."""
    m = index.membership
    storage.save_npz(
        path, set_offsets=index.set_offsets, remap=index.remap, m_indptr=m.indptr,
        m_indices=m.indices, image_indptr=index.image_indptr, image_sets=index.image_sets,
        image_counts=index.image_counts, valid=index.valid,
        meta=np.array([*index.mask_shape, index.shard_images, m.shape[1]], dtype=np.int64))


def load_index(path: AnyPath, vocab: Vocabulary) -> ConceptIndex:
    """Read an index written by :func:`save_index`."""
    z = storage.load_npz(path)
    sh, sw, shard_images, n_labels = (int(x) for x in z["meta"])
    indptr = z["m_indptr"]
    membership = sp.csr_matrix((np.ones(len(z["m_indices"])), z["m_indices"], indptr),
                               shape=(len(indptr) - 1, n_labels))
    return ConceptIndex(vocab, (sh, sw), shard_images, z["set_offsets"], z["remap"], membership,
                        z["image_indptr"], z["image_sets"], z["image_counts"], z["valid"])

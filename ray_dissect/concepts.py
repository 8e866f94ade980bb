"""Stage 1b: the concept index, a compressed form of every label of every pixel.

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
``set_offsets[shard]``; the same label set in two shards simply has two ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ray_dissect.dataset import BadSampleError, BrodenDataset, Vocabulary


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


def build_shard(dataset: BrodenDataset, start: int, stop: int) -> ShardIndex:
    """Decode the labels of images ``start:stop`` and compress them into a :class:`ShardIndex`."""
    sh, sw = dataset.mask_shape
    decoded: list[tuple[np.ndarray, np.ndarray] | None] = []
    errors: list[tuple[int, str]] = []
    for local, index in enumerate(range(start, stop)):
        try:
            decoded.append(dataset.read_labels(index))
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
            rows = canonical_label_rows(item[0], item[1], width)
            uniq, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
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
        set_offsets: (n_shards + 1,) int64; global set id = set_offsets[shard] + local id.
        membership: (n_sets, n_labels) CSR float64 0/1 matrix.
        image_indptr: (N + 1,) int64; image_sets (q,) int64 global ids; image_counts (q,) int64.
        valid: (N,) bool, samples whose labels were read.
    """

    vocab: Vocabulary
    mask_shape: tuple[int, int]
    shard_images: int
    set_offsets: np.ndarray
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
        return int(self.set_offsets[-1])

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
        shard = (start + np.arange(local.shape[0])) // self.shard_images
        return local.astype(np.int64) + self.set_offsets[shard][:, None, None]


def merge_shards(vocab: Vocabulary, mask_shape: tuple[int, int], shard_images: int,
                 shards: list[ShardIndex]) -> ConceptIndex:
    """Combine per-shard indexes (in shard order) into one :class:`ConceptIndex`."""
    sizes = [len(s.set_indptr) - 1 for s in shards]
    offsets = np.zeros(len(shards) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)
    nnz_base = np.cumsum([0] + [int(s.set_indptr[-1]) for s in shards])
    indptr = np.concatenate([s.set_indptr[:-1] + base for s, base in
                             zip(shards, nnz_base[:-1], strict=True)] + [nnz_base[-1:]])
    labels = np.concatenate([s.set_labels for s in shards])
    membership = sp.csr_matrix((np.ones(len(labels)), labels, indptr),
                               shape=(int(offsets[-1]), vocab.size))
    img_indptr = np.concatenate([[0], np.cumsum(np.concatenate(
        [np.diff(s.image_indptr) for s in shards]))]).astype(np.int64)
    img_sets = np.concatenate([s.image_sets + off for s, off in zip(shards, offsets, strict=False)])
    return ConceptIndex(vocab, mask_shape, shard_images, offsets, membership, img_indptr,
                        img_sets.astype(np.int64),
                        np.concatenate([s.image_counts for s in shards]).astype(np.int64),
                        np.concatenate([s.valid for s in shards]))


def save_index(index: ConceptIndex, path: Path) -> None:
    """Write the index arrays (not the vocabulary, which is re-read from the dataset)."""
    m = index.membership
    np.savez(path, set_offsets=index.set_offsets, m_indptr=m.indptr, m_indices=m.indices,
             image_indptr=index.image_indptr, image_sets=index.image_sets,
             image_counts=index.image_counts, valid=index.valid,
             meta=np.array([*index.mask_shape, index.shard_images, m.shape[1]], dtype=np.int64))


def load_index(path: Path, vocab: Vocabulary) -> ConceptIndex:
    """Read an index written by :func:`save_index`."""
    with np.load(path) as z:
        sh, sw, shard_images, n_labels = (int(x) for x in z["meta"])
        offsets = z["set_offsets"]
        membership = sp.csr_matrix(
            (np.ones(len(z["m_indices"])), z["m_indices"], z["m_indptr"]),
            shape=(int(offsets[-1]), n_labels))
        return ConceptIndex(vocab, (sh, sw), shard_images, offsets, membership,
                            z["image_indptr"], z["image_sets"], z["image_counts"], z["valid"])

"""PRISM: joint PCA over shards, TorchPRISM's normalisation, quantisation, GE and clustering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps

from ray_dissect.errors import SpecError
from ray_dissect.visualize.prism import (
    DROPPED,
    PCAAccumulator,
    cluster_presence,
    gradual_extrapolation,
    normalize_to_rgb,
    prism_maps,
    project,
    quantize,
    split_rgb,
)


def _features(seed: int = 0, b: int = 4, c: int = 6, h: int = 3, w: int = 5) -> torch.Tensor:
    """Features with well-separated variances along random directions, plus an offset."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(c, c)))[0]
    scales = np.array([9.0, 5.0, 3.0, 1.5, 0.7, 0.3])[:c]
    x = rng.normal(size=(b * h * w, c)) * scales @ rotation + rng.normal(size=c) * 4
    return torch.tensor(x.reshape(b, h, w, c).transpose(0, 3, 1, 2).copy(), dtype=torch.float32)


def _numpy_pca(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reference: SVD of the centred samples, signs fixed the same way."""
    x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double().numpy()
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    axes = vt[:3].T.copy()
    for j in range(3):
        if axes[np.argmax(np.abs(axes[:, j])), j] < 0:
            axes[:, j] *= -1
    b, _, h, w = features.shape
    scores = (xc @ axes).reshape(b, h, w, 3).transpose(0, 3, 1, 2)
    return scores, axes, s**2 / (s**2).sum()


def _one_shot(features: torch.Tensor) -> PCAAccumulator:
    acc = PCAAccumulator(features.shape[1])
    acc.add(features)
    return acc


def test_components_equal_numpy_svd_pca() -> None:
    """Scores, axes and variance ratios equal an SVD of the centred data up to the fixed sign."""
    features = _features()
    pca = _one_shot(features).finalize()
    scores, axes, ratio = _numpy_pca(features)
    np.testing.assert_allclose(pca.axes, axes, atol=1e-8)
    np.testing.assert_allclose(project(features, pca).numpy(), scores, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio, ratio, atol=1e-10)
    assert project(features, pca).dtype == torch.float32


def test_variance_ratio_truncated_to_sample_count() -> None:
    """With fewer samples than channels the ratios have min(n, C) entries, as the SVD's."""
    features = _features(seed=3, b=1, c=6, h=1, w=4)
    pca = _one_shot(features).finalize()
    _, _, ratio = _numpy_pca(features)
    assert pca.explained_variance_ratio.shape == (4,)
    np.testing.assert_allclose(pca.explained_variance_ratio, ratio, atol=1e-10)


def test_sign_convention_largest_loading_positive() -> None:
    """Each axis's largest-magnitude loading is positive, also for negated features."""
    for sign in (1.0, -1.0):
        axes = _one_shot(sign * _features(seed=1)).finalize().axes
        top = axes[np.argmax(np.abs(axes), axis=0), np.arange(3)]
        assert np.all(top > 0)


def test_three_shards_merged_equal_one_shot() -> None:
    """Merging per-shard accumulators (through a state_dict round trip) equals one pass."""
    features = _features(seed=2, b=6)
    shards = [PCAAccumulator(6) for _ in range(3)]
    for i, acc in enumerate(shards):
        acc.add(features[2 * i:2 * i + 2])
    restored = [PCAAccumulator.from_state(acc.state_dict()) for acc in shards]
    assert all(isinstance(v, np.ndarray) for v in shards[0].state_dict().values())
    merged = restored[0].merge(restored[1]).merge(restored[2])
    whole = _one_shot(features)
    assert merged.count == whole.count == 6 * 15
    np.testing.assert_allclose(merged.total, whole.total, rtol=1e-12)
    np.testing.assert_allclose(merged.gram, whole.gram, rtol=1e-12)
    a, b = merged.finalize(), whole.finalize()
    np.testing.assert_allclose(a.axes, b.axes, atol=1e-10)
    np.testing.assert_allclose(a.explained_variance_ratio, b.explained_variance_ratio, atol=1e-12)


def test_bad_inputs_raise_spec_errors() -> None:
    """Wrong channel counts, too few samples and unknown modes raise SpecError."""
    with pytest.raises(SpecError):
        PCAAccumulator(4).add(torch.zeros(1, 5, 2, 2))
    with pytest.raises(SpecError):
        PCAAccumulator(4).finalize()
    with pytest.raises(SpecError):
        quantize(torch.zeros(1, 3, 2, 2), "unique")  # type: ignore[arg-type]


def test_normalize_to_rgb_is_torchprism_formula() -> None:
    """Standardise by the whole tensor's mean and unbiased std, clip to [-1, 1], min-max."""
    x = torch.tensor([[[[0.0, 1.0], [2.0, 10.0]]]]).repeat(2, 3, 1, 1) * torch.arange(1, 3)[
        :, None, None, None]
    flat = x.numpy().ravel()
    z = np.clip((flat - flat.mean()) / flat.std(ddof=1), -1, 1)
    expected = ((z - z.min()) / (z.max() - z.min())).reshape(x.shape)
    np.testing.assert_allclose(normalize_to_rgb(x).numpy(), expected, atol=1e-6)
    assert torch.all(normalize_to_rgb(torch.ones(1, 3, 2, 2)) == 0)


def _two_images() -> torch.Tensor:
    """Two 1 x 3 images; colours (levels r, g, b -> code 9r + 3g + b) worked out by hand.

    image 0: (.1,.1,.1) -> 0; (.9,.4,.2) -> (2,1,0) = 21; (.5,.5,.5) -> 13.
    image 1: (.6,.6,.6) -> 13; (0,.75,0) -> (0,2,0) = 6 (1.5 rounds to 2); (.25,.1,0) -> 0
    (0.5 rounds half to even, to 0). Common colours: {0, 13}.
    """
    pixels = [[(0.1, 0.1, 0.1), (0.9, 0.4, 0.2), (0.5, 0.5, 0.5)],
              [(0.6, 0.6, 0.6), (0.0, 0.75, 0.0), (0.25, 0.1, 0.0)]]
    return torch.tensor(pixels).permute(0, 2, 1).unsqueeze(2)  # (2, 3, 1, 3)


def _presence(*sets: set[int]) -> np.ndarray:
    out = np.zeros((len(sets), 27), dtype=bool)
    for b, colours in enumerate(sets):
        out[b, sorted(colours)] = True
    return out


def test_quantize_modes_on_hand_example() -> None:
    """none / inclusive / exclusive give the hand-computed codes, presence and colours."""
    rgb = _two_images()
    d = DROPPED
    cases = {
        "none": ([[0, 21, 13], [13, 6, 0]], _presence({0, 21, 13}, {13, 6, 0})),
        "plain": ([[0, 21, 13], [13, 6, 0]], _presence({0, 21, 13}, {13, 6, 0})),
        "inclusive": ([[0, d, 13], [13, d, 0]], _presence({0, 13}, {0, 13})),
        "exclusive": ([[d, 21, d], [d, 6, d]], _presence({21}, {6})),
    }
    for mode, (codes, presence) in cases.items():
        q = quantize(rgb, mode)  # type: ignore[arg-type]
        assert q.codes.dtype == torch.uint8
        np.testing.assert_array_equal(q.codes[:, 0].numpy(), codes, err_msg=mode)
        np.testing.assert_array_equal(q.presence.numpy(), presence, err_msg=mode)
    np.testing.assert_array_equal(quantize(rgb).common.numpy(), _presence({0, 13})[0])
    inclusive = quantize(rgb, "inclusive").rgb[0, :, 0].T.numpy()
    np.testing.assert_array_equal(inclusive, [[0, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]])
    exclusive = quantize(rgb, "exclusive").rgb[1, :, 0].T.numpy()
    np.testing.assert_array_equal(exclusive, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    plain = quantize(rgb, "plain").rgb
    torch.testing.assert_close(plain, inclusive_and_exclusive := quantize(rgb, "inclusive").rgb
                               + quantize(rgb, "exclusive").rgb)
    assert plain.unique().tolist() == [0.0, 0.5, 1.0] and inclusive_and_exclusive.any()


def test_gradual_extrapolation_on_hand_example() -> None:
    """Bilinear upsampling (align_corners=False) times each layer's channel mean, in order.

    [[0, 4]] -> width 4 is [0, 1, 3, 4]; times mean_c = 2 -> [0, 2, 6, 8]; -> 2 x 4 repeats the
    row; times [[1, 0, 1, 0], [2, 2, 2, 2]] -> [[0, 0, 6, 0], [0, 4, 12, 16]].
    """
    maps = torch.tensor([[[[0.0, 4.0]]]])
    layer1 = torch.stack([torch.ones(1, 4), 3 * torch.ones(1, 4)])[None]  # (1, 2, 1, 4)
    layer2 = torch.tensor([[1.0, 0.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])[None, None]
    out = gradual_extrapolation(maps, [layer1, layer2])
    np.testing.assert_allclose(out[0, 0].numpy(), [[0, 0, 6, 0], [0, 4, 12, 16]], atol=1e-6)
    assert gradual_extrapolation(maps, []).shape == (1, 1, 1, 2)


def test_prism_maps_pipeline_follows_torchprism_order() -> None:
    """rgb = normalize(GE(scores)) without quantisation; GE of the selected colours with it."""
    features = _features(seed=4, b=2, h=2, w=2)
    pca = _one_shot(features).finalize()
    ge = [torch.rand(2, 5, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1]
    scores = project(features, pca)
    plain = prism_maps(features, pca, ge)
    expected = normalize_to_rgb(gradual_extrapolation(scores, ge))
    torch.testing.assert_close(plain.rgb, expected)
    assert plain.rgb.shape == (2, 3, 4, 4) and plain.split is None
    inclusive = prism_maps(features, pca, ge, "inclusive")
    quant = quantize(normalize_to_rgb(scores), "inclusive")
    expected = normalize_to_rgb(gradual_extrapolation(quant.rgb, ge))
    torch.testing.assert_close(inclusive.rgb, expected)
    torch.testing.assert_close(inclusive.codes, quant.codes)
    plain = prism_maps(features, pca, ge, "plain")
    quant = quantize(normalize_to_rgb(scores), "plain")
    torch.testing.assert_close(plain.rgb, normalize_to_rgb(gradual_extrapolation(quant.rgb, ge)))
    no_ge = prism_maps(features, pca, split=True)
    assert no_ge.rgb.shape == (2, 3, 2, 2)
    assert no_ge.split is not None and no_ge.split.shape == (2, 3, 3, 2, 2)


def test_split_rgb_uses_matplotlib_colormaps() -> None:
    """Channel c is drawn in Reds / Greens / Blues exactly as matplotlib maps it."""
    rgb = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    split = split_rgb(rgb)
    for c, name in enumerate(("Reds", "Greens", "Blues")):
        expected = colormaps[name](rgb[:, c].double().numpy())[..., :3].transpose(0, 3, 1, 2)
        np.testing.assert_allclose(split[:, c].numpy(), expected, atol=1e-6)


def _two_groups() -> np.ndarray:
    presence = np.zeros((8, 27), dtype=bool)
    presence[:4, [0, 1, 2, 13]] = True
    presence[4:, [20, 21, 22, 26]] = True
    presence[1, 5] = presence[6, 9] = presence[2, 13] = True  # small variations
    presence[3, 2] = presence[7, 26] = False
    return presence


def test_clustering_separates_two_groups_deterministically() -> None:
    """Two separated groups of presence vectors get two clusters, the same for any seed."""
    presence = _two_groups()
    result = cluster_presence(presence, 2, seed=7)
    np.testing.assert_array_equal(result.labels, [0, 0, 0, 0, 1, 1, 1, 1])
    again = cluster_presence(torch.as_tensor(presence), 2, seed=7)
    np.testing.assert_array_equal(again.labels, result.labels)
    np.testing.assert_array_equal(again.centres, result.centres)
    assert again.inertia == result.inertia
    for seed in range(5):
        np.testing.assert_array_equal(cluster_presence(presence, 2, seed=seed).labels,
                                      result.labels)
    np.testing.assert_allclose(result.centres[0], presence[:4].mean(0))
    with pytest.raises(SpecError):
        cluster_presence(presence, 9)

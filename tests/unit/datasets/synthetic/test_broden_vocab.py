"""The Broden-shaped vocabulary has Broden's category sizes, overlaps and part structure."""

from __future__ import annotations

from ray_dissect.datasets.synthetic.broden_vocab import broden_vocabulary

BRODEN_SIZES = {"color": 11, "object": 584, "part": 234, "material": 32, "scene": 468,
                "texture": 47}


def test_sizes_and_overlaps() -> None:
    """Broden's category sizes; 160 parts are objects, 12 materials objects, 7 parts textures."""
    v = broden_vocabulary()
    assert {c: len(n) for c, n in v.names.items()} == BRODEN_SIZES
    assert all(len(set(n)) == len(n) for n in v.names.values())
    sets = {c: set(n) for c, n in v.names.items()}
    assert len(sets["part"] & sets["object"]) == 160
    assert len(sets["material"] & sets["object"]) == 12
    assert len(sets["part"] & sets["texture"]) == 7
    assert len(set().union(*sets.values())) == 1197
    assert sorted(v.numbers.values()) == list(range(1, 1198))


def test_parts_things_and_scenes_are_consistent() -> None:
    """Things' parts are part names (never the thing itself); scenes list real things and stuff."""
    v = broden_vocabulary()
    parts, objects = set(v.names["part"]), set(v.names["object"])
    assert {t.name for t in v.things} | {s.name for s in v.stuff} == objects
    assert all(set(t.parts) <= parts and t.name not in t.parts for t in v.things)
    assert sum(bool(t.parts) for t in v.things) > len(v.things) // 2
    assert all(set(s.things) <= objects and all(set(opts) <= {x.name for x in v.stuff}
                                                for opts in s.layers) for s in v.scenes)
    assert abs(v.thing_weights.sum() - 1) < 1e-9 and v.thing_weights[0] > v.thing_weights[-1]


def test_vocabulary_is_deterministic() -> None:
    """Building the vocabulary twice (uncached) gives the same numbers and kinds."""
    a, b = broden_vocabulary.__wrapped__(), broden_vocabulary.__wrapped__()
    assert a.numbers == b.numbers and a.things == b.things and a.scenes == b.scenes

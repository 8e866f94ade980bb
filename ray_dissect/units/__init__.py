"""Per-unit statistics over all images: exact quantile thresholds (`thresholds`), activation
ranges by 1-D k-means (`ranges`), mergeable top-k images (`topk`). Pure numpy.
May import: `errors` only.
"""

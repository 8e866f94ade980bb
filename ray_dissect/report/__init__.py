"""The static HTML report built from a job's records, summary, spec and activations.
May import: `records`, `job`, `storage`, `errors` and the analysis packages whose results it shows.
"""

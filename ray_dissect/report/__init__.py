"""The static HTML report built from a job's records, summary, spec and activations.

``results`` (``ray_dissect.open_job(DIR)``: summary, records, DataFrames, activations) ->
``render`` (the work unit: tiles, sprites and histograms of one block of units, pure numpy over
``tiles``) -> ``build`` (the driver: every page, from ``pages``, ``views``, ``catalog`` and the
inline-SVG ``plots``; Jinja templates in ``templates/``). The site opens from ``file://``: no
network, no modules, no fonts.
May import: `records`, `job`, `storage`, `errors` and the analysis packages whose results it
shows (`datasets`, `models`, `concepts`, `units`, `explain`).
"""

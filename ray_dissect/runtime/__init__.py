"""The only package that imports Ray: actors, remote tasks and the driver that runs a job.

Everything here is a thin wrapper around the Ray-free work units of
:mod:`ray_dissect.workunits`.
"""

"""The only package that imports Ray: model-replica actors, CPU tasks, the generic driver that
walks the stage table, local cluster start-up and job submission (Jobs API).

Every work unit it runs is a Ray-free function of :mod:`ray_dissect.pipeline`.
May import: everything below it; `ray` is imported only here (an import-linter contract).
"""

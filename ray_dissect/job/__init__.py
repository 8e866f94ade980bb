"""The job directory on disk: its layout (`layout.JobDir`), its manifest (spec hash, one hash
and progress per stage, the runs) and the progress tracker that keeps the manifest current.

What each stage computes is in `ray_dissect.pipeline`; this package only knows paths and the
manifest file. May import: `spec`, `storage`, `errors`.
"""

"""The job directory on disk: its layout (`layout.JobDir`), its manifest (spec hash, one hash
and progress per stage, the runs), the progress tracker that keeps the manifest current, the
lock that admits one writer (`lock`) and the verified done markers of part files (`markers`).

What each stage computes is in `ray_dissect.pipeline`; this package only knows paths and the
manifest file. May import: `spec`, `storage`, `errors`.
"""

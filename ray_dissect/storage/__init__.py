"""Where results live: local paths or fsspec URIs, and the Zarr arrays in them.

Holds: `files` (locations, atomic whole-object reads and writes, tree listings, npz;
re-exported here, so `from ray_dissect import storage` then `storage.read_text(...)`) and
`arrays` (Zarr v3 image arrays written one whole shard per writer, with done markers kept
apart from the data).
May import: `ray_dissect.errors` only.
"""

from ray_dissect.storage.files import (
    LOCAL_PROTOCOLS,
    AnyPath,
    is_local,
    is_uri,
    list_files,
    load_npz,
    location,
    makedirs,
    read_bytes,
    read_text,
    readable,
    remove_temporaries,
    remove_tree,
    save_npz,
    touch,
    version_key,
    write_bytes,
    write_text,
    zarr_args,
)

__all__ = [
    "LOCAL_PROTOCOLS", "AnyPath", "is_local", "is_uri", "list_files", "load_npz", "location",
    "makedirs", "read_bytes", "read_text", "readable", "remove_temporaries", "remove_tree",
    "save_npz", "touch", "version_key", "write_bytes", "write_text", "zarr_args",
]

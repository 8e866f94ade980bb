"""Submitting a job to a running Ray cluster through the Ray Jobs API (``ray job submit``'s SDK).

:func:`submit` validates the spec on this machine, then ships it with a small ``working_dir``:
the validated spec as ``spec.json`` and, when ``model.factory`` is a local ``file.py:fn``, a
copy of that file as an importable module (``rd_factory_<stem>:fn``; the working directory is
on ``sys.path`` of the driver and of every worker the job starts, on every node), with the
copy's sha256 as ``model.factory_sha256``, so the shipped spec has the local spec's hash (the
hash covers a factory file by content, :mod:`ray_dissect.spec.fingerprint`). The cluster
runs ``python -m ray_dissect run spec.json --out OUT --address auto``. Dataset and checkpoint
paths are not copied: they, and ``OUT``, must be absolute paths that every node sees (a shared
filesystem) or fsspec URIs (``s3://bucket/run``, see :mod:`ray_dissect.storage`), as the
driver, the model actors and the CPU tasks all read and write there. ``env`` ships
environment variables (an object store's endpoint, ``FSSPEC_S3``, ...) to the job's driver and
every worker it starts; prefer credentials the nodes already hold (instance roles) to
shipping secrets, which the Jobs API shows to anyone who can list jobs.

The submission id is derived from the job (:func:`submission_id`), so submitting the same job
again returns the existing run instead of starting a second one. Ray refuses to reuse an id,
so re-running a job whose run FAILED or was STOPPED takes ``retry=True``: it submits attempt
``<id>-2``, ``<id>-3``, ..., which resumes from the work the failed run marked done.
The id's spec hash covers the factory file and checkpoint by content; a checkpoint that only
the cluster sees cannot be read here, so the id names it by its path (a warning says so):
replacing such a checkpoint in place and submitting again returns the earlier run, so give
a new ``out`` (the run on the cluster hashes the checkpoint's content either way).

Token authentication: when ``RAY_AUTH_TOKEN`` (or ``RAY_AUTH_TOKEN_PATH``, a file) is set and
``RAY_AUTH_MODE`` is not ``disabled``, that token is sent as ``Authorization: Bearer``; with
only ``RAY_AUTH_MODE=token`` Ray's client sends ``~/.ray/auth_token``; otherwise no token is
sent (a token is never sent to an address unless the user asked for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ray_dissect.errors import ModelError, RayDissectError, SpecError, StageError
from ray_dissect.models.build import check_model_name
from ray_dissect.spec import JobSpec, load_spec
from ray_dissect.spec.fingerprint import file_sha256
from ray_dissect.spec.job import NoAliasLoader
from ray_dissect.storage import is_uri

log = logging.getLogger(__name__)

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
RETRYABLE = frozenset({"FAILED", "STOPPED"})
SPEC_FILE = "spec.json"
FACTORY_PREFIX = "rd_factory_"
AUTH_HINT = ("export RAY_AUTH_MODE=token and the cluster's token as RAY_AUTH_TOKEN=... or "
             "RAY_AUTH_TOKEN_PATH=FILE (`ray get-auth-token` prints it where the cluster was "
             "started)")
CONNECT_HINT = ("give the Jobs API address http://HEAD:8265 (the dashboard port), e.g. through "
                "`ray dashboard cluster.yaml` or `kubectl port-forward svc/CLUSTER-head-svc 8265`")
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
PATH_HINT = "write it as the cluster's nodes see it, on a filesystem every node mounts"
LogSink = Callable[[str], None]


def cluster_out(out: str) -> str:
    """The job directory on the cluster, normalised: an fsspec URI, or an absolute path
    (relative paths are refused) with the symlinks this machine sees in it resolved, so
    that two aliases of one directory give one submission id (on a shared filesystem
    mounted alike everywhere; a path this machine does not have stays as written)."""
    if is_uri(out):
        return out.rstrip("/")
    if out.lower().startswith("file://"):
        out = out[len("file://"):]
    if not out.startswith("/"):
        raise SpecError("--out must be an absolute path on the cluster", given=out,
                        hint=PATH_HINT)
    return os.path.realpath(posixpath.normpath(out))


def submission_id(spec: JobSpec, out: str) -> str:
    """The job's submission id: ``ray-dissect-<spec hash>-<8 hex of sha256(out)>``.

    The spec hash leaves out pure scheduling fields, so the same job with more or fewer
    actors is the same submission.
    """
    digest = hashlib.sha256(cluster_out(out).encode()).hexdigest()[:8]
    return f"ray-dissect-{spec.spec_hash()}-{digest}"


def _attempt_id(base: str, attempt: int) -> str:
    return base if attempt == 1 else f"{base}-{attempt}"


def entrypoint(out: str) -> str:
    """The shell command the job runs on the cluster (in its working directory)."""
    return f"python -m ray_dissect run {SPEC_FILE} --out {shlex.quote(out)} --address auto"


def _check_cluster_paths(spec_path: Path) -> None:
    """Refuse relative data paths: they would resolve against this machine's directory."""
    raw = yaml.load(Path(spec_path).read_text(), Loader=NoAliasLoader)  # checked by load_spec
    dataset = raw.get("dataset") or {}
    weights = (raw.get("model") or {}).get("weights")
    fields = {f"dataset.{k}": dataset.get(k)
              for k in ("root", "annotations", "stuff", "panoptic", "panoptic_masks")}
    if isinstance(weights, dict):
        fields["model.weights.checkpoint"] = weights.get("checkpoint")
    for field, value in fields.items():
        if isinstance(value, str) and "://" not in value and not value.startswith("/"):
            raise SpecError(f"job spec field '{field}' is relative; the cluster does not "
                            "share this machine's directory", given=value, hint=PATH_HINT)


def stage_job(spec: JobSpec, root: Path) -> JobSpec:
    """Write the job's working directory into ``root``; return the spec the cluster runs
    (its spec hash is ``spec``'s)."""
    data = spec.model_dump(mode="json")
    factory = spec.model.factory
    if factory is not None and factory.rpartition(":")[0].endswith(".py"):
        file, _, func = factory.rpartition(":")
        source = Path(file)
        if not source.is_file():
            raise ModelError("model factory file not found", given=file,
                             hint="give an existing file as 'path/to/file.py:function'")
        module = FACTORY_PREFIX + re.sub(r"\W", "_", source.stem)
        shutil.copyfile(source, root / f"{module}.py")
        data["model"]["factory"] = f"{module}:{func}"
        data["model"]["factory_sha256"] = file_sha256(root / f"{module}.py")
    shipped = JobSpec.model_validate(data)
    (root / SPEC_FILE).write_text(shipped.model_dump_json(indent=2) + "\n")
    return shipped


def _address(address: str) -> str:
    # Without a scheme Ray reads the address as a GCS address and waits 30 s for it.
    return (address if "://" in address else f"http://{address}").rstrip("/")


def _auth_headers() -> dict[str, str]:
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as err:
            raise StageError(f"cannot read RAY_AUTH_TOKEN_PATH {path!r}: {err.strerror}",
                             hint=AUTH_HINT) from None
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _env_removed(*names: str) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _first_line(err: BaseException) -> str:
    """One line of an error; for a server-side traceback, its last line (the exception)."""
    lines = [ln.strip() for ln in str(getattr(err, "message", "") or err).splitlines()]
    lines = [ln for ln in lines if ln and ln != "."]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and "Traceback" in lines[0]:
        return f"{lines[0].split('Traceback')[0]}{lines[-1]}"
    return lines[0]


@contextmanager
def _jobs_api(address: str, job_id: str = "") -> Iterator[Any]:
    """A ``JobSubmissionClient`` for ``address``; Ray's errors become one-line errors."""
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = _address(address)
    try:
        with _env_removed(*ADDRESS_VARS):  # Ray lets them override an explicit address
            client = JobSubmissionClient(url, headers=_auth_headers())
        yield client
    except AuthenticationError as err:
        raise StageError(f"the Ray cluster at {url} refused the request: {_first_line(err)}",
                         hint=AUTH_HINT) from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise StageError(f"cannot reach the Ray Jobs API at {url}", hint=CONNECT_HINT) from None
    except RuntimeError as err:
        if job_id and "status code 404" in str(err):
            raise RayDissectError(f"no job {job_id!r} on the Ray cluster at {url}",
                                  hint=f"list the jobs with `ray job list --address {url}`"
                                  ) from None
        raise StageError(f"the Ray Jobs API at {url} failed: {_first_line(err)}") from None


def _status_or_none(client: Any, job_id: str) -> str | None:
    try:
        return str(client.get_job_status(job_id).value)
    except RuntimeError as err:
        if "status code 404" in str(err):
            return None
        raise


def _latest_attempt(client: Any, base: str) -> tuple[int, str | None]:
    """The last attempt of a submission and its status (``None``: never submitted)."""
    attempt, state = 1, _status_or_none(client, base)
    while state is not None:
        following = _status_or_none(client, _attempt_id(base, attempt + 1))
        if following is None:
            break
        attempt, state = attempt + 1, following
    return attempt, state


def follow(client: Any, job_id: str, on_log: LogSink | None = None,
           poll_seconds: float = 1.0, timeout: float | None = None) -> str:
    """Stream the job's logs to ``on_log`` until it ends; return its final status.

    Logs are tailed over Ray's websocket; if that is unavailable or drops, the rest is
    polled with ``get_job_logs``. After ``timeout`` seconds a :class:`StageError` is raised
    (the job keeps running).
    """
    import aiohttp

    sink = on_log or (lambda _text: None)
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout

    async def tail() -> None:
        nonlocal seen
        async for chunk in client.tail_job_logs(job_id):
            sink(chunk)
            seen += len(chunk)

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout))
    except (RuntimeError, OSError, aiohttp.ClientError) as err:  # TimeoutError is an OSError
        log.info("following the logs of %s by polling (%s)", job_id, _first_line(err))
    while True:
        state = str(client.get_job_status(job_id).value)
        text = client.get_job_logs(job_id)
        if len(text) > seen:
            sink(text[seen:])
            seen = len(text)
        if state in TERMINAL:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise StageError(f"job {job_id} is still {state} after {timeout:g} s",
                             hint="it keeps running: `ray-dissect logs`/`stop` it by its id")
        time.sleep(poll_seconds)


def submit(spec_path: Path, out: str, address: str, *, wait: bool,
           extra_pip: list[str] | None = None, on_log: LogSink | None = None,
           retry: bool = False, poll_seconds: float = 1.0,
           timeout: float | None = None, env: list[str] | None = None) -> tuple[str, str]:
    """Submit the job in ``spec_path`` to write ``out`` on the cluster at ``address``.

    Returns ``(submission id, status)``. A job already submitted (same spec hash and ``out``)
    is not submitted again: its id and current status are returned (with ``wait``, its logs
    are followed). With ``retry``, a run that ended FAILED or STOPPED is submitted again as
    the next attempt. ``extra_pip`` adds pip requirements to the job's runtime environment,
    ``env`` environment variables (see :func:`env_vars`).
    With ``wait``, the logs go to ``on_log`` and the final status is returned (or
    :class:`StageError` after ``timeout`` seconds).
    """
    spec = load_spec(spec_path)
    if spec.model.name is not None:  # refused here, not after shipping
        check_model_name(spec.model.name)
    _check_cluster_paths(spec_path)
    out = cluster_out(out)
    variables = env_vars(env)
    base = submission_id(spec, out)
    with _jobs_api(address) as client:
        attempt, state = _retrying(lambda: _latest_attempt(client, base))
        job_id = _attempt_id(base, attempt)
        if state is None or (retry and state in RETRYABLE):
            if state is not None:
                job_id = _attempt_id(base, attempt + 1)
            _submit_new(client, spec, out, job_id, extra_pip, variables)
        else:
            log.info("job %s already submitted (%s); not submitting it again", job_id, state)
        if wait:
            return job_id, follow(client, job_id, on_log, poll_seconds, timeout)
        return job_id, str(client.get_job_status(job_id).value)


def env_vars(items: list[str] | None) -> dict[str, str]:
    """``NAME=VALUE`` items, or ``NAME`` for this machine's value, as a dict.

    Raises:
        SpecError: a bad name, or a ``NAME`` this machine does not define.
    """
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SpecError("--env takes NAME or NAME=VALUE", given=item,
                            hint="e.g. --env FSSPEC_S3 or --env AWS_ENDPOINT_URL=http://minio:9000")
        if not sep:
            if name not in os.environ:
                raise SpecError(f"--env {name}: not set on this machine", given=name,
                                hint=f"export {name}=... first, or give --env {name}=VALUE")
            value = os.environ[name]
        out[name] = value
    return out


TRANSIENT = ("No available agent", "status code 500", "status code 502", "status code 503",
             "status code 504")
"""Jobs API answers that mean "not ready yet" (e.g. right after ``ray start``)."""
RETRY_SECONDS = 60.0


def _retrying(call: Callable[[], Any], seconds: float = RETRY_SECONDS) -> Any:
    """``call()``, tried again every few seconds for up to ``seconds`` while it fails with a
    transient Jobs API error (:data:`TRANSIENT`); any other error, or the last, is raised."""
    deadline, delay = time.monotonic() + seconds, 1.0
    while True:
        try:
            return call()
        except RuntimeError as err:
            if not any(t in str(err) for t in TRANSIENT) or time.monotonic() > deadline:
                raise
            log.warning("the Jobs API is not ready (%s); trying again", _first_line(err))
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _submit_new(client: Any, spec: JobSpec, out: str, job_id: str,
                extra_pip: list[str] | None, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="ray-dissect-submit-") as tmp:
        stage_job(spec, Path(tmp))
        runtime_env: dict[str, Any] = {"working_dir": tmp}
        if extra_pip:
            runtime_env["pip"] = list(extra_pip)
        if env:
            runtime_env["env_vars"] = dict(env)
        metadata = {"ray_dissect.job": spec.name, "ray_dissect.spec_hash": spec.spec_hash(),
                    "ray_dissect.out": out}
        try:
            _retrying(lambda: client.submit_job(entrypoint=entrypoint(out),
                                                submission_id=job_id, runtime_env=runtime_env,
                                                metadata=metadata))
        except RuntimeError as err:
            if "already exists" not in str(err):
                raise
            log.info("job %s was submitted concurrently; keeping that run", job_id)
        else:
            log.info("submitted job %s", job_id)


def watch(job_id: str, address: str, on_log: LogSink | None = None,
          poll_seconds: float = 1.0, timeout: float | None = None) -> str:
    """Stream a submitted job's logs (from the start) to ``on_log``; return its final status."""
    with _jobs_api(address, job_id) as client:
        return follow(client, job_id, on_log, poll_seconds, timeout)


def status(job_id: str, address: str) -> str:
    """The job's status: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    with _jobs_api(address, job_id) as client:
        return str(client.get_job_status(job_id).value)


def logs(job_id: str, address: str) -> str:
    """Everything the job's driver has printed so far."""
    with _jobs_api(address, job_id) as client:
        return str(client.get_job_logs(job_id))


def stop(job_id: str, address: str) -> bool:
    """Ask the job to stop; True if it was still running."""
    with _jobs_api(address, job_id) as client:
        return bool(client.stop_job(job_id))

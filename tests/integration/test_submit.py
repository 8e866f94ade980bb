"""Submitting through the Ray Jobs API to a real three-node Ray cluster on loopback.

The cluster is separate from the session's shared one (which runs in-process): its own ports
and ``--temp-dir``, token authentication with a random token (``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` in the environment of its ``ray start`` processes), and a marker variable
that every process it starts inherits. Teardown kills exactly the processes carrying the
marker, so neither the session's cluster nor any other Ray on the machine is touched
(``ray stop`` would stop them all).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ray_dissect.errors import RayDissectError, SpecError, StageError
from ray_dissect.runtime import submit as sub
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import JobSpec, load_spec, parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
MARKER_VAR = "RAY_DISSECT_TEST_CLUSTER"
pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="teardown finds the cluster's processes in /proc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _marked_pids(marker: str) -> list[int]:
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def _wait_http(url: str, headers: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class JobsCluster:
    """A head (1 CPU, Jobs API) and two workers (1 CPU; one with ``accelerator_node``)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(24)
        self.marker = secrets.token_hex(8)
        self.temp_dir = tempfile.mkdtemp(prefix="rdc", dir="/tmp")  # short: socket paths
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.procs: list[subprocess.Popen] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    MARKER_VAR: self.marker, "RAY_USAGE_STATS_ENABLED": "0",
                    "DASHBOARD_METRIC_PORT": str(_free_port()),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
        self.env = env

    def _start(self, name: str, *args: str) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        with open(Path(self.temp_dir) / f"{name}.out", "w") as log:  # the child keeps it open
            self.procs.append(subprocess.Popen(
                [ray, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                 "--object-store-memory=100000000", f"--temp-dir={self.temp_dir}",
                 f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats",
                 *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _alive_nodes(self) -> list[dict]:
        request = urllib.request.Request(f"{self.address}/api/v0/nodes?detail=1",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [n for n in body["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def _join(self, name: str, nodes: int, *args: str) -> None:
        """Start a worker and wait until ``nodes`` nodes are alive. On a loaded machine a
        worker can miss Ray's fixed 30 s registration window; it is started again then."""
        for _ in range(3):
            self._start(name, f"--address=127.0.0.1:{self.gcs_port}", *args)
            deadline = time.monotonic() + 60
            while self.procs[-1].poll() is None and time.monotonic() < deadline:
                if len(self._alive_nodes()) >= nodes:
                    return
                time.sleep(1)
        raise RuntimeError(f"worker {name} did not join, see {self.temp_dir}/{name}.out")

    def start(self) -> None:
        self._start("head", "--head", f"--port={self.gcs_port}",
                    f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
                    f"--ray-client-server-port={_free_port()}")
        _wait_http(f"{self.address}/api/jobs/", {"Authorization": f"Bearer {self.token}"}, 90)
        # One at a time: two workers registering at once on 2 busy cores can time out.
        self._join("worker-cpu", 2)
        self._join("worker-accel", 3, '--resources={"accelerator_node": 1}')

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(50):  # everything the cluster started carries the marker
            pids = _marked_pids(self.marker)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def jobs_cluster() -> Iterator[JobsCluster]:
    cluster = JobsCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        assert not _marked_pids(cluster.marker), "processes of the test cluster survived"


@pytest.fixture
def token_env(jobs_cluster: JobsCluster, monkeypatch: pytest.MonkeyPatch) -> JobsCluster:
    """The client side of token auth: the cluster's token in RAY_AUTH_TOKEN."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", jobs_cluster.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return jobs_cluster


def _spec_dict(root: Path) -> dict:
    return {"name": "submitted",
            "model": {"factory": f"{PLANTED}:red_channel",
                      "preprocess": {"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}},
            "layers": ["pool"], "dataset": {"root": str(root)},
            "method": {"quantile": 0.1, "top_k": 8},
            "resources": {"actors": 1, "batch_size": 2, "shard_images": 2,
                          "actor_resources": {"accelerator_node": 1}}}


def _client(cluster: JobsCluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.address,
                               headers={"Authorization": f"Bearer {cluster.token}"})


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records" / "pool.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("ray_cluster")
def test_submitted_job_matches_local_run_and_is_not_run_twice(
        token_env: JobsCluster, four_images: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The job runs on the cluster (its model actor on the accelerator node) and writes the
    records a local run writes; submitting it again returns the same run."""
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump(_spec_dict(four_images)))
    out = tmp_path / "cluster-out"
    chunks: list[str] = []
    job_id, state = sub.submit(job_yaml, str(out), token_env.address, wait=True,
                               on_log=chunks.append, poll_seconds=0.5, timeout=240)
    spec = load_spec(job_yaml)
    assert job_id == sub.submission_id(spec, str(out))
    assert state == "SUCCEEDED", "".join(chunks)[-3000:]
    assert "records:" in "".join(chunks)  # the CLI's summary, streamed back
    assert sub.status(job_id, token_env.address) == "SUCCEEDED"
    assert "records:" in sub.logs(job_id, token_env.address)

    # The same job again: no second run, whether waiting, retrying or not.
    written = (out / "records" / "pool.jsonl").stat().st_mtime_ns
    assert sub.submit(job_yaml, str(out), token_env.address, wait=False) == (job_id, "SUCCEEDED")
    assert sub.submit(job_yaml, str(out) + "/", token_env.address, wait=True,
                      retry=True) == (job_id, "SUCCEEDED")
    ids = [j.submission_id for j in _client(token_env).list_jobs()]
    assert ids.count(job_id) == 1 and not [i for i in ids if i.startswith(job_id + "-")]
    assert (out / "records" / "pool.jsonl").stat().st_mtime_ns == written
    assert not sub.stop(job_id, token_env.address)  # already finished

    # The cluster ran the shipped spec: the factory file became a module (its sha256
    # recorded), nothing else moved, and the spec hash is the local one.
    shipped = JobSpec.model_validate_json((out / "spec.json").read_text())
    assert shipped.model.factory == "rd_factory_planted:red_channel"
    expected = spec.model_dump(mode="json")
    expected["model"]["factory"] = shipped.model.factory
    expected["model"]["factory_sha256"] = hashlib.sha256(Path(PLANTED).read_bytes()).hexdigest()
    assert shipped.model_dump(mode="json") == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec_hash"] == shipped.spec_hash() == spec.spec_hash()

    # The same job run locally on the session cluster (no accelerator_node there; actor
    # placement is a scheduling field, outside the spec hash).
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    local = _spec_dict(four_images)
    del local["resources"]["actor_resources"]
    local_spec = parse_spec(local)
    run_job(local_spec, tmp_path / "local-out")
    remote, here = _records(out), _records(tmp_path / "local-out")
    assert len(remote) == 1 and remote[0]["label"]["name"] == "red"
    # Records are equal field for field, the spec hash in their provenance included.
    assert local_spec.spec_hash() == spec.spec_hash()
    assert remote == here


def test_follow_falls_back_to_polling(token_env: JobsCluster, four_images: Path,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the log websocket fails, the logs are polled: nothing is lost or repeated."""
    from ray.job_submission import JobSubmissionClient

    client = _client(token_env)
    job_id = client.submit_job(entrypoint="echo one; sleep 1; echo two")

    async def broken(self: object, job_id: str):
        raise RuntimeError("websocket closed")
        yield ""

    monkeypatch.setattr(JobSubmissionClient, "tail_job_logs", broken)
    chunks: list[str] = []
    assert sub.follow(client, job_id, chunks.append, poll_seconds=0.2, timeout=60) == "SUCCEEDED"
    assert "".join(chunks) == client.get_job_logs(job_id)
    assert "one\n" in "".join(chunks) and "two\n" in "".join(chunks)


def test_wait_times_out_and_stop_stops(token_env: JobsCluster) -> None:
    job_id = _client(token_env).submit_job(entrypoint="echo started; sleep 60")
    chunks: list[str] = []
    with pytest.raises(StageError, match=f"job {job_id} is still"):
        sub.watch(job_id, token_env.address, chunks.append, poll_seconds=0.2, timeout=2)
    assert sub.stop(job_id, token_env.address)
    assert sub.watch(job_id, token_env.address, timeout=30) == "STOPPED"


def test_auth_failures_are_one_line_errors(jobs_cluster: JobsCluster, four_images: Path,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(StageError, match="Invalid authentication token") as err:
        sub.status("anything", jobs_cluster.address)
    assert "RAY_AUTH_TOKEN" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 6

    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump(_spec_dict(four_images)))
    with pytest.raises(StageError, match="refused"):
        sub.submit(job_yaml, str(tmp_path / "out"), jobs_cluster.address, wait=False)

    # No token at all (Ray's own client would add ~/.ray/auth_token in token mode).
    import ray.dashboard.modules.dashboard_sdk as sdk

    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setattr(sdk, "get_auth_headers_if_auth_enabled", lambda _headers: {})
    with pytest.raises(StageError, match="Missing authentication token") as err:
        sub.logs("anything", jobs_cluster.address)
    assert "RAY_AUTH_MODE=token" in str(err.value)

    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-such-token"))
    with pytest.raises(StageError, match="RAY_AUTH_TOKEN_PATH"):
        sub.status("anything", jobs_cluster.address)

    # The right token read from a file.
    token_file = tmp_path / "token"
    token_file.write_text(jobs_cluster.token + "\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(RayDissectError, match="no job 'no-such-job'") as err:
        sub.status("no-such-job", jobs_cluster.address)
    assert type(err.value) is RayDissectError and "ray job list" in str(err.value)


def test_unreachable_cluster_and_bad_paths(four_images: Path, tmp_path: Path) -> None:
    """Connection refused, a relative --out and a relative dataset root fail on one line."""
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump(_spec_dict(four_images)))
    port = _free_port()
    with pytest.raises(StageError, match=f"cannot reach the Ray Jobs API at http://127.0.0.1:{port}"):
        sub.submit(job_yaml, str(tmp_path / "out"), f"127.0.0.1:{port}", wait=False)
    with pytest.raises(SpecError, match="absolute path"):
        sub.submit(job_yaml, "runs/out", f"127.0.0.1:{port}", wait=False)
    relative = _spec_dict(four_images)
    relative["dataset"]["root"] = "data/synthetic"
    job_yaml.write_text(yaml.safe_dump(relative))
    with pytest.raises(SpecError, match=r"dataset\.root"):
        sub.submit(job_yaml, str(tmp_path / "out"), f"127.0.0.1:{port}", wait=False)

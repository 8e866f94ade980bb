"""Cluster configs and submission ids, checked without starting Ray.

``cluster.yaml`` goes through the Ray cluster launcher's own validation (offline: the
autoscaler's JSON Schema after ``prepare_config`` fills the AWS defaults, no credentials);
``deploy/rayjob.yaml`` is checked for the keys KubeRay needs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from ray_dissect.errors import ModelError, SpecError
from ray_dissect.pipeline.table import stage_hashes
from ray_dissect.runtime.submit import (
    SPEC_FILE,
    cluster_out,
    entrypoint,
    env_vars,
    stage_job,
    submission_id,
)
from ray_dissect.spec import JobSpec, parse_spec

ROOT = Path(__file__).parents[3]
PLANTED = str(ROOT / "tests" / "fixtures" / "planted.py")


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.fixture(scope="module")
def cluster_cfg() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_validation(cluster_cfg: dict) -> None:
    _validate(cluster_cfg)
    nodes = cluster_cfg["available_node_types"]
    assert nodes[cluster_cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert {"GPU": 1} in [n["resources"] for n in nodes.values()]
    setup = " ".join(cluster_cfg["setup_commands"])
    assert '"ray[default]==2.60.0"' in setup and "ray_dissect[demo,s3]" in setup
    # Token auth on every node, with the token shipped from the launching machine.
    assert "~/.ray/auth_token" in cluster_cfg["file_mounts"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token ray start" in cluster_cfg[key][-1]


@pytest.mark.parametrize(("path", "typo"), [
    ((), "availble_node_types"),
    (("available_node_types", "gpu_worker"), "resorces"),
    ((), "setup_comands"),
    (("available_node_types", "cpu_worker"), "max_worker"),
])
def test_typo_in_cluster_yaml_is_refused(cluster_cfg: dict, path: tuple, typo: str) -> None:
    import jsonschema

    bad = copy.deepcopy(cluster_cfg)
    where = bad
    for key in path:
        where = where[key]
    right = {"availble_node_types": "available_node_types", "resorces": "resources",
             "setup_comands": "setup_commands", "max_worker": "max_workers"}[typo]
    where[typo] = where.pop(right)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        _validate(bad)


def test_rayjob_has_what_kuberay_needs() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "rayjob.yaml").read_text()))
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert "ray-dissect run /jobs/job.yaml" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"]
    gpu_limits = [c["resources"]["limits"].get("nvidia.com/gpu", 0)
                  for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert max(gpu_limits) >= 1
    # The job spec in the ConfigMap is a valid spec, mounted where the entrypoint reads it.
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert mounts["job-spec"] == "/jobs"
    assert volumes["job-spec"]["configMap"]["name"] == config["metadata"]["name"]
    job_spec = parse_spec(yaml.safe_load(config["data"]["job.yaml"]))
    assert job_spec.dataset.root.startswith("/data/")


def _spec(**resources: object) -> JobSpec:
    return parse_spec({"model": {"factory": f"{PLANTED}:red_channel"}, "layers": ["pool"],
                       "dataset": {"root": "/data/broden"},
                       "resources": {"batch_size": 2, "shard_images": 2, **resources}})


def test_submission_id_is_derived_from_the_job() -> None:
    spec = _spec()
    sid = submission_id(spec, "/mnt/shared/runs/a")
    assert sid == submission_id(_spec(), "/mnt/shared/runs/a")
    assert sid.startswith(f"ray-dissect-{spec.spec_hash()}-") and len(sid.split("-")[-1]) == 8
    assert sid == submission_id(spec, "/mnt/shared/runs/a/")  # the same directory
    assert sid == submission_id(spec, "/mnt/shared/runs/./a")
    assert sid == submission_id(_spec(actors=7), "/mnt/shared/runs/a")  # scheduling only
    assert sid != submission_id(spec, "/mnt/shared/runs/b")
    assert sid != submission_id(_spec(batch_size=1), "/mnt/shared/runs/a")


@pytest.mark.parametrize("out", ["runs/a", "./a", "file://runs/a"])
def test_out_must_be_an_absolute_cluster_path(out: str) -> None:
    with pytest.raises(SpecError, match="--out"):
        cluster_out(out)


def test_out_may_be_an_object_store_uri() -> None:
    assert cluster_out("s3://bucket/runs/a/") == "s3://bucket/runs/a"
    assert submission_id(_spec(), "s3://bucket/runs/a") == submission_id(
        _spec(), "s3://bucket/runs/a/")
    assert submission_id(_spec(), "s3://bucket/runs/a") != submission_id(
        _spec(), "gs://bucket/runs/a")


def test_env_items_become_runtime_env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSSPEC_S3", '{"endpoint_url": "http://minio:9000"}')
    assert env_vars(["FSSPEC_S3", "A=b=c", "EMPTY="]) == {
        "FSSPEC_S3": '{"endpoint_url": "http://minio:9000"}', "A": "b=c", "EMPTY": ""}
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SpecError, match="--env NOT_SET_ANYWHERE: not set on this machine"):
        env_vars(["NOT_SET_ANYWHERE"])
    with pytest.raises(SpecError, match="--env takes NAME or NAME=VALUE"):
        env_vars(["1BAD=x"])


def test_stage_job_ships_the_factory_as_a_module(tmp_path: Path) -> None:
    shipped = stage_job(_spec(), tmp_path)
    assert shipped.model.factory == "rd_factory_planted:red_channel"
    assert (tmp_path / "rd_factory_planted.py").read_text() == Path(PLANTED).read_text()
    written = JobSpec.model_validate(json.loads((tmp_path / SPEC_FILE).read_text()))
    assert written == shipped and written.dataset.root == "/data/broden"
    assert entrypoint("/mnt/x y") == (
        "python -m ray_dissect run spec.json --out '/mnt/x y' --address auto")


def test_shipped_spec_has_the_local_spec_hash(tmp_path: Path) -> None:
    """The shipped spec (the factory file as a module, its copy's sha256 recorded) has the
    local spec's hash and stage hashes; an edit of the local file afterwards does not."""
    local = tmp_path / "local"
    local.mkdir()
    factory = local / "net.py"
    factory.write_text(Path(PLANTED).read_text())
    spec = parse_spec({"model": {"factory": f"{factory}:red_channel"}, "layers": ["pool"],
                       "dataset": {"root": "/data/broden"}})
    (tmp_path / "ship").mkdir()
    shipped = stage_job(spec, tmp_path / "ship")
    assert shipped.model.factory == "rd_factory_net:red_channel"
    assert shipped.model.factory_sha256 == hashlib.sha256(factory.read_bytes()).hexdigest()
    assert shipped.spec_hash() == spec.spec_hash()
    assert stage_hashes(shipped) == stage_hashes(spec)
    factory.write_text(factory.read_text() + "# edited\n")
    assert shipped.spec_hash() != spec.spec_hash()


def test_stage_job_leaves_package_factories_alone(tmp_path: Path) -> None:
    spec = parse_spec({"model": {"factory": "ray_dissect.zoo:efficientnet_lite0"},
                       "layers": ["x"], "dataset": {"root": "/data/broden"}})
    assert stage_job(spec, tmp_path) == spec
    assert sorted(p.name for p in tmp_path.iterdir()) == [SPEC_FILE]


def test_stage_job_refuses_a_missing_factory_file(tmp_path: Path) -> None:
    spec = parse_spec({"model": {"factory": "/nowhere/model.py:build"}, "layers": ["x"],
                       "dataset": {"root": "/data/broden"}})
    with pytest.raises(ModelError, match="factory file not found"):
        stage_job(spec, tmp_path)


class FakeJobsAPI:
    """A Jobs API that remembers submissions (what ``submit`` sees of Ray's client)."""

    jobs: dict[str, str]
    submitted: list[dict]

    def __init__(self, address: str, headers: dict | None = None) -> None:
        self.address, self.headers = address, headers

    def get_job_status(self, job_id: str) -> object:
        from ray.job_submission import JobStatus

        if job_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not "
                               "exist.")
        return JobStatus(self.jobs[job_id])

    def submit_job(self, **kwargs: object) -> str:
        job_id = str(kwargs["submission_id"])
        workdir = Path(str(kwargs["runtime_env"]["working_dir"]))  # type: ignore[index]
        shipped = JobSpec.model_validate_json((workdir / SPEC_FILE).read_text())
        self.submitted.append({**kwargs, "spec": shipped})
        self.jobs[job_id] = "PENDING"
        return job_id


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> type[FakeJobsAPI]:
    import ray.job_submission

    FakeJobsAPI.jobs, FakeJobsAPI.submitted = {}, []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeJobsAPI)
    return FakeJobsAPI


def _job_yaml(tmp_path: Path, root: str, **extra: object) -> Path:
    """A job YAML for the planted red-channel model on dataset ``root``."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"model": {"factory": f"{PLANTED}:red_channel"},
                                    "layers": ["pool"], "dataset": {"root": root}, **extra}))
    return path


def test_submit_once_then_retry_failed_runs(fake_api: type[FakeJobsAPI], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from ray_dissect.runtime.submit import submit

    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken")
    job_yaml = _job_yaml(tmp_path, "/data/broden",
                         resources={"batch_size": 2, "shard_images": 2})
    base = submission_id(parse_spec(yaml.safe_load(job_yaml.read_text())), "/runs/a")

    assert submit(job_yaml, "/runs/a", "head:8265", wait=False, extra_pip=["x==1"]) == (
        base, "PENDING")
    (first,) = fake_api.submitted
    assert first["entrypoint"] == entrypoint("/runs/a")
    assert first["runtime_env"]["pip"] == ["x==1"]
    assert first["spec"].model.factory == "rd_factory_planted:red_channel"
    assert first["metadata"]["ray_dissect.out"] == "/runs/a"
    assert not Path(first["runtime_env"]["working_dir"]).exists()  # a temporary directory

    fake_api.jobs[base] = "RUNNING"
    assert submit(job_yaml, "/runs/a/", "head:8265", wait=False, retry=True) == (
        base, "RUNNING")
    fake_api.jobs[base] = "FAILED"
    assert submit(job_yaml, "/runs/a", "head:8265", wait=False) == (base, "FAILED")
    assert len(fake_api.submitted) == 1
    assert submit(job_yaml, "/runs/a", "head:8265", wait=False, retry=True) == (
        f"{base}-2", "PENDING")
    fake_api.jobs[f"{base}-2"] = "STOPPED"
    assert submit(job_yaml, "/runs/a", "head:8265", wait=False, retry=True)[0] == f"{base}-3"
    assert submit(job_yaml, "/runs/a", "head:8265", wait=False) == (f"{base}-3", "PENDING")
    assert [s["submission_id"] for s in fake_api.submitted] == [base, f"{base}-2", f"{base}-3"]
    assert "env_vars" not in first["runtime_env"]


def test_submit_to_an_object_store_ships_env(fake_api: type[FakeJobsAPI], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from ray_dissect.runtime.submit import submit

    monkeypatch.setenv("FSSPEC_S3", '{"endpoint_url": "http://minio:9000"}')
    job_yaml = _job_yaml(tmp_path, "s3://data/broden")
    job_id, _ = submit(job_yaml, "s3://bucket/runs/a/", "head:8265", wait=False,
                       env=["FSSPEC_S3", "AWS_REGION=eu-west-1"])
    (sent,) = fake_api.submitted
    assert sent["entrypoint"] == entrypoint("s3://bucket/runs/a")
    assert sent["runtime_env"]["env_vars"] == {
        "FSSPEC_S3": '{"endpoint_url": "http://minio:9000"}', "AWS_REGION": "eu-west-1"}
    assert sent["spec"].dataset.root == "s3://data/broden"
    spec = parse_spec(yaml.safe_load(job_yaml.read_text()))
    assert job_id == submission_id(spec, "s3://bucket/runs/a")


@pytest.mark.parametrize(("env", "header"), [
    ({"RAY_AUTH_TOKEN": "abc"}, "Bearer abc"),
    ({"RAY_AUTH_TOKEN": "abc", "RAY_AUTH_MODE": "token"}, "Bearer abc"),
    ({"RAY_AUTH_TOKEN_PATH": "FILE"}, "Bearer from-file"),
    ({"RAY_AUTH_TOKEN": "abc", "RAY_AUTH_MODE": "disabled"}, None),
    ({}, None),
])
def test_token_from_the_environment(fake_api: type[FakeJobsAPI], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, env: dict,
                                    header: str | None) -> None:
    from ray_dissect.runtime import submit as sub

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "token").write_text("from-file\n")
    for var, value in env.items():
        monkeypatch.setenv(var, str(tmp_path / "token") if value == "FILE" else value)
    seen: list[FakeJobsAPI] = []
    monkeypatch.setattr(FakeJobsAPI, "get_job_status",
                        lambda self, _id: seen.append(self) or type("S", (), {"value": "X"}))
    assert sub.status("some-job", "head:8265") == "X"
    assert seen[0].address == "http://head:8265"
    assert seen[0].headers.get("Authorization") == header


def test_explicit_address_wins_over_ray_address_variables(
        fake_api: type[FakeJobsAPI], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override its address argument."""
    import os

    from ray_dissect.runtime import submit as sub

    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://elsewhere:8265")
    seen: list[tuple] = []
    monkeypatch.setattr(FakeJobsAPI, "__init__", lambda self, address, headers=None: seen.append(
        (address, os.environ.get("RAY_ADDRESS"), os.environ.get("RAY_API_SERVER_ADDRESS"))))
    monkeypatch.setattr(FakeJobsAPI, "stop_job", lambda self, _id: True, raising=False)
    assert sub.stop("job", "http://head:8265/")
    assert seen == [("http://head:8265", None, None)]
    assert os.environ["RAY_ADDRESS"] == "auto"  # restored


def test_server_errors_become_one_line(fake_api: type[FakeJobsAPI],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ray_dissect.errors import StageError
    from ray_dissect.runtime import submit as sub

    def fail(self: FakeJobsAPI, _id: str) -> None:
        raise RuntimeError("Request failed with status code 500: Traceback (most recent call "
                           "last):\n  File \"x.py\", line 1\nKeyError: 'boom'\n.")

    monkeypatch.setattr(FakeJobsAPI, "get_job_status", fail)
    with pytest.raises(StageError) as err:
        sub.status("job", "head:8265")
    assert str(err.value) == ("the Ray Jobs API at http://head:8265 failed: Request failed "
                              "with status code 500: KeyError: 'boom'")

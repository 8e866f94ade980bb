"""Run a job on a 3-node ray.cluster_utils.Cluster and remove a worker node mid-extraction.

Usage: python node_loss_job.py SPEC_JSON OUT  (run by test_node_loss.py in its own process,
because a pytest process holds one Ray session already).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import JobSpec


def main() -> None:
    spec = JobSpec.model_validate_json(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1, resources={"extract": 1}) for _ in range(2)]
    ray.init(address=cluster.address, include_dashboard=False)
    errors: list[BaseException] = []

    def job() -> None:
        try:
            run_job(spec, out)
        except BaseException as err:  # reported below
            errors.append(err)

    thread = threading.Thread(target=job)
    thread.start()
    removed = False
    while thread.is_alive():
        manifest = out / "manifest.json"
        if not removed and manifest.exists():
            stage = json.loads(manifest.read_text())["stages"]["activations"]
            if stage["state"] == "running" and 1 <= stage["done"] < stage["total"] - 1:
                cluster.remove_node(workers[1])
                cluster.add_node(num_cpus=1, resources={"extract": 1})  # a replacement joins
                removed = True
        time.sleep(0.02)
    thread.join()
    ray.shutdown()
    cluster.shutdown()
    sys.stdout.write(json.dumps({"removed": removed, "errors": [repr(e) for e in errors]}) + "\n")
    sys.exit(1 if errors or not removed else 0)


if __name__ == "__main__":
    main()

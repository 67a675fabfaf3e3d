"""Tests of the actor runtime on a two-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a GCS and two raylets from this process: a
head node with 1 CPU and a worker node with 2 CPUs. Vertex actors on different
nodes then exchange their messages between raylets. One actor run is compared
with the in-process ``diffuse``, and the placement of its vertex actors is read
from the GCS actor table while the run is in progress.

The module shuts down any Ray instance that an earlier test started (the
session fixture ``local_ray``). Afterwards it starts a local instance with the
same number of CPUs, so later test modules still find Ray initialised.
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pytest
import ray
import ray._private.ray_constants
from ray.cluster_utils import Cluster

import sheafsim as ss
from sheafsim.runtime import diffuse_on_actors

# The actor run repeats the in-process arithmetic operation for operation.
MATCH_ATOL = 1e-12

# The sheaf has 6 vertices: x, z1, a1, z2, a2 and z3. Nesterov reaches tol in
# 292 steps.
LAYER_WIDTHS = [3, 6, 5, 2]
BATCH_SIZE = 8
DIFFUSION_SETTINGS = {"dt": 0.05, "tol": 1e-6, "integrator": "nesterov", "seed": 0}


@pytest.fixture(scope="module")
def two_node_cluster():
    """Start a head node and one worker node on loopback and connect to them."""
    restore_cpus = None
    if ray.is_initialized():
        restore_cpus = int(ray.cluster_resources().get("CPU", 1))
        ray.shutdown()

    temp_dir = tempfile.mkdtemp(prefix="ray")
    try:
        with pytest.MonkeyPatch.context() as patch:
            # Ray writes the cluster address to <temp dir>/ray/ray_current_cluster
            # and deletes that file on shutdown. A private temp dir keeps other Ray
            # users on this machine from joining this cluster, and keeps this test
            # from deleting their address file.
            patch.setenv("RAY_TMPDIR", temp_dir)
            # On Linux Ray replaces 127.0.0.1 with the machine's routable address.
            # With this flag off, as it is by default on macOS and Windows, the
            # nodes listen on 127.0.0.1 only.
            # NOTE: a private Ray constant, checked on Ray 2.60. setattr raises
            # AttributeError if a later Ray removes it.
            patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
            patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

            cluster = Cluster(
                initialize_head=True,
                connect=True,
                head_node_args={
                    "num_cpus": 1,
                    "include_dashboard": False,
                    "node_ip_address": "127.0.0.1",
                },
            )
            try:
                cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
                cluster.wait_for_nodes()
                yield cluster
            finally:
                ray.shutdown()
                cluster.shutdown()
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if restore_cpus is not None:
            ray.init(
                num_cpus=restore_cpus, include_dashboard=False, logging_level="ERROR"
            )


def alive_vertex_nodes(cluster: Cluster) -> dict[str, str]:
    """Return ``{vertex: node id}`` for the live vertex actors of sheafsim runs.

    Actor names are ``sheafsim-<run id>-<vertex>``. ``ray.util.state.list_actors``
    would need the dashboard, which this cluster does not start, so this reads
    the GCS actor table directly.
    """
    table = cluster.global_state.actor_table(None, actor_state_name="ALIVE")
    nodes = {}
    for actor in table.values():
        name = actor["Name"]
        if not name.startswith("sheafsim-") or name.endswith("-coordinator"):
            continue
        vertex = name.split("-", 2)[2]
        nodes[vertex] = actor["Address"]["NodeID"]
    return nodes


@pytest.fixture(scope="module")
def cluster_run(two_node_cluster):
    """Run one actor diffusion on the cluster, recording where the vertices ran."""
    net = ss.NeuralSheaf.random(LAYER_WIDTHS, seed=0)
    x = np.random.default_rng(0).normal(size=(LAYER_WIDTHS[0], BATCH_SIZE))
    placements: list[dict[str, str]] = []

    def record_placement(step: int, max_change: float, elapsed_s: float) -> None:
        placements.append(alive_vertex_nodes(two_node_cluster))

    actors = diffuse_on_actors(
        net,
        x,
        progress=record_placement,
        progress_interval_s=0.1,
        timeout_s=120.0,
        **DIFFUSION_SETTINGS,
    )
    reference = ss.diffuse(net, x, **DIFFUSION_SETTINGS)
    return net, actors, reference, placements


def test_cluster_has_two_nodes(two_node_cluster):
    alive = [node for node in ray.nodes() if node["Alive"]]

    assert len(alive) == 2
    assert ray.cluster_resources()["CPU"] == 3


def test_cluster_run_matches_diffuse(cluster_run):
    _, actors, reference, _ = cluster_run

    assert reference.status == "converged"
    assert actors.status == reference.status
    assert actors.steps == reference.steps
    assert set(actors.state) == set(reference.state)
    for vertex in reference.state:
        difference = float(
            np.max(np.abs(actors.state[vertex] - reference.state[vertex]))
        )
        assert difference <= MATCH_ATOL, f"stalk {vertex} differs by {difference:.3e}"
    assert np.max(np.abs(actors.output - reference.output)) <= MATCH_ATOL


def test_cluster_run_uses_both_nodes(two_node_cluster, cluster_run):
    net, _, _, placements = cluster_run
    node_ids = {two_node_cluster.head_node.node_id}
    node_ids |= {node.node_id for node in two_node_cluster.worker_nodes}
    assert placements, "the run ended before the first progress call"
    # Progress calls start once every actor has reported ready.
    placement = placements[-1]

    assert set(placement) == set(net.vertices)
    assert set(placement.values()) <= node_ids
    # The runtime creates vertex actors with the SPREAD scheduling strategy.
    assert set(placement.values()) == node_ids, f"vertex actors ran on {placement}"

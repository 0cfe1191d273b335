"""The local channel: the router calls model replicas on its own node over a Unix socket.

A Ray Serve handle call costs the router and the model replica a few ms of CPU per request (Ray's
request routing, metrics, gRPC, object serialization: ``bench/README.md``), which for a light model
is most of the request. Each model replica also listens on a Unix socket (``server.py``); the router
sends a ``ModelCall`` there and reads back the same chunk batches the handle would return
(``client.py``). What Ray's handle does for the router is kept or handed back to it:

* only replicas the Serve controller reports ``RUNNING`` are called, least busy first;
* a replica at its ``max_ongoing_requests`` answers "busy", and the call goes through Ray's handle,
  which queues it the way Ray does;
* a replica that dies before answering sends nothing: the call is retried through the handle;
* deployments that autoscale never use the channel (Ray's autoscaler counts the handle's requests),
  nor do replicas on other nodes (no socket to reach).
"""

from typing import Any


def channel_allowed(deployment_config: dict[str, Any], on_demand: bool = False) -> bool:
    """A deployment the channel may serve: one whose replica count Ray's autoscaler does not set, and
    not a deployment of on-demand models with several replicas (Ray's multiplexed routing sends each
    request to a replica that holds its model)."""
    if deployment_config.get("autoscaling_config"):
        return False
    return not (on_demand and deployment_config.get("num_replicas", 1) != 1)

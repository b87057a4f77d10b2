"""A PerceptionNode in a test's own process (so that the test can hold its model or count what
it builds), over real DDS: in the test client's context, spun on its own thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_client import RosClient

from mtl_perception.ros import node as node_module


class InProcessNode:
    """The node ``name``, configured and activated with ``params``; ``remaps`` are ``-r`` rules
    (e.g. ``image:=/x/image``, ``__ns:=/x``)."""

    def __init__(
        self, client: RosClient, name: str, params: dict, remaps: Sequence[str] = ()
    ) -> None:
        self.name = name
        cli_args = ["--ros-args", *(arg for rule in remaps for arg in ("-r", rule))]
        self.node = node_module.PerceptionNode(
            name,
            context=client.context,
            cli_args=cli_args if remaps else None,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        self.executor = SingleThreadedExecutor(context=client.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.node._release_io()
        self.node.destroy_node()

"""Test-side ROS helpers: a client node spinning in its own context (node processes:
mtl_perception.ros.node_process)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
SENSOR = qos_profile_sensor_data


class RosClient:
    """A node of the test process, spun on a background thread, collecting messages."""

    def __init__(self, domain_id: int, name: str = "test_client") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.lock = threading.Lock()
        self._publishers: dict[str, Any] = {}
        self._subscribed: set[str] = set()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutting down
                return

    def subscribe(self, topic: str, msg_type: type, qos: QoSProfile = RELIABLE) -> None:
        """Collects ``topic`` into :meth:`messages` (once per topic)."""
        if topic in self._subscribed:
            return
        self._subscribed.add(topic)

        def store(msg: Any) -> None:
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, store, qos)

    def publisher(self, topic: str, msg_type: type, qos: QoSProfile = SENSOR):
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self._publishers[topic]

    def messages(self, topic: str) -> list[Any]:
        with self.lock:
            return [msg for _, msg in self.received[topic]]

    def timed(self, topic: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.received[topic])

    def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.05)
        return condition()

    def call(self, service_type: type, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.node.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.node.destroy_client(client)
        if not future.done():
            raise TimeoutError(f"service {name} did not answer")
        return future.result()

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)

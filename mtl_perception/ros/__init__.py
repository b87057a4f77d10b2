"""The ROS 2 side: the perception node and message conversions (the only code importing rclpy)."""

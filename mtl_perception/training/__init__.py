"""The offline training package (never imports rclpy or ROS messages)."""

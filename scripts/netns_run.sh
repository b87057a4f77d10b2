#!/usr/bin/env bash
# Runs a command where no DDS traffic can leave this machine: in a private network namespace
# that has only loopback, with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of
# its own (or, where no namespace may be created, those variables alone, with a warning). Tests
# (test/conftest.py) and the robot-path check start ROS nodes through it.
#
# The logic is mtl_perception/ros/isolation.py's (standard library only, run by path: no venv
# needed), with python3 or $MTL_NETNS_PYTHON. The command's exit code is passed through.
#
# Usage: scripts/netns_run.sh COMMAND [ARGS...]
MTL_NETNS_ENTRY=$0 exec "${MTL_NETNS_PYTHON:-python3}" \
  "$(dirname "$0")/../mtl_perception/ros/isolation.py" "$@"

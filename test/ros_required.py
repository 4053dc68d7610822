"""Imported first by the test modules that need ROS 2: importing it skips the importing module,
with the reason, where rclpy or vision_msgs is not importable. (pyproject.toml's isort
force-to-top keeps the import above the ROS imports it guards.)"""

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not importable")

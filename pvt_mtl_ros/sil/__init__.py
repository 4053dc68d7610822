"""Simulator-in-the-loop evaluation: frames with exact ground truth go through the
perception node over ROS 2; outputs are matched to the truth by header stamp and scored
live; thresholds turn the run into a release gate.

`pvt-mtl-sil` (cli.py) runs a scenario (scenario.py, config/sil/*.yaml) against our own
simulated camera (pvt_mtl_ros/ros/sim_camera_node.py), CARLA's ROS bridge or a Gazebo
ros_gz bridge (adapters.py). See docs/SIL.md.
"""

from .scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario"]

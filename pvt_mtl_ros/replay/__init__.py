"""Rosbag2 replay evaluation without a ROS 2 install (rosbags reads and writes the bags).

`pvt-mtl-replay` (cli.py) runs the network over a bag's camera topics, scores the predictions
against ground truth (ground_truth.py, docs/REPLAY.md), writes them back as a bag and writes a
report; `pvt-mtl-make-bag` (make_bag.py) turns a labelled image folder into a bag plus ground
truth.
"""

from .bag_io import BagReadError, ReplayError

__all__ = ["BagReadError", "ReplayError"]

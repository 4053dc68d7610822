"""`python -m pvt_mtl_ros.perception_node --ros-args --params-file config/perception.yaml`:
the perception node where `ros2 run` / `ros2 launch` are not installed."""

import sys

from .ros.perception_node import main

if __name__ == "__main__":
    sys.exit(main())

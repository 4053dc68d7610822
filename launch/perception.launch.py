"""Start the perception node with config/perception.yaml.

    ros2 launch pvt_mtl_ros perception.launch.py device:=cuda checkpoint:=/data/mtl_b1.pt \
        namespace:=/vehicle image_topic:=/sensors/front/image_raw

In the standalone venv `make setup-launch` installs `launch` and `ros2` (README: Installing).
Where the `launch` package is absent, the same node runs as
`python -m pvt_mtl_ros.ros.perception_node --ros-args --params-file config/perception.yaml`.
test/test_perception_node.py reads the argument tables below without importing `launch`;
test/test_launch.py runs this file through `ros2 launch` and `launch.LaunchService`.

The launch ends when the node does, and fails (non-zero exit) when the node exits non-zero,
e.g. when configure cannot load the checkpoint. The node's output is not run through a
pseudo-terminal, so logs hold no colour codes (RCUTILS_COLORIZED_OUTPUT=1 forces colour).
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "pvt_mtl_ros"

# Launch arguments that override the node parameter of the same name; empty keeps the value
# of the params file.
PARAMETER_ARGUMENTS = {
    "checkpoint": "Checkpoint file; empty keeps the params file's value.",
    "device": "auto, cpu, cuda or cuda:N; empty keeps the params file's value.",
}

# Launch arguments that are not node parameters: (default, description).
OTHER_ARGUMENTS = {
    "params_file": ("", "Parameters YAML; empty: the installed config/perception.yaml."),
    "namespace": ("", "Namespace of the node, and so of its relative input and output topics."),
    "image_topic": ("", "Remap the default camera's input camera/image_raw to this topic."),
    "remappings": ("", "More remappings, 'from:=to' separated by spaces."),
    "log_level": ("info", "Logging level of the node."),
}


def default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory(PACKAGE)) / "config" / "perception.yaml")
    # not installed, or no AMENT_PREFIX_PATH at all (ament_index raises OSError): the source tree
    except (ImportError, LookupError, OSError):
        return str(Path(__file__).resolve().parents[1] / "config" / "perception.yaml")


def parse_remappings(text: str) -> list[tuple[str, str]]:
    """'a:=b c:=d' -> [('a', 'b'), ('c', 'd')]."""
    pairs = []
    for item in text.split():
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"remapping {item!r} is not of the form from:=to")
        pairs.append((source, target))
    return pairs


def _node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in PARAMETER_ARGUMENTS}
    overrides = {name: v for name, v in value.items() if v}
    params_file = LaunchConfiguration("params_file").perform(context) or default_params_file()
    remappings = parse_remappings(LaunchConfiguration("remappings").perform(context))
    image_topic = LaunchConfiguration("image_topic").perform(context)
    if image_topic:
        remappings.insert(0, ("camera/image_raw", image_topic))
    return [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="perception_node",
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[params_file, overrides] if overrides else [params_file],
            remappings=remappings,
            ros_arguments=["--log-level", LaunchConfiguration("log_level")],
            output="screen",
            on_exit=_on_node_exit,
        )
    ]


def _on_node_exit(event, context):
    """The launch ends with the node; a non-zero exit makes it fail: LaunchService (and so
    `ros2 launch`) returns 1 when an event handler raises, and a Shutdown alone returns 0."""
    if event.returncode != 0:
        raise RuntimeError(f"{event.process_name} exited with code {event.returncode}")
    return [Shutdown(reason=f"{event.process_name} exited")]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value="", description=description)
        for name, description in PARAMETER_ARGUMENTS.items()
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in OTHER_ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])

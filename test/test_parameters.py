"""Table-driven parameters: the generated reference, and the simulated camera's checks.

(The perception node's own cases are in test_perception_node.py, next to its model fixture.)
"""

import subprocess
import uuid
from pathlib import Path

import ros_required  # noqa: F401
import pytest
from node_harness import run_module
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from pvt_mtl_ros.ros.parameters import given_values, render_reference
from pvt_mtl_ros.ros.sim_camera_node import SimCameraNode

ROOT = Path(__file__).resolve().parents[1]
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def test_the_parameter_reference_is_generated_from_the_tables():
    text = (ROOT / "docs" / "PARAMETERS.md").read_text()
    assert text == render_reference(), "run: python -m pvt_mtl_ros.ros.parameters"
    for name in ("score_threshold", "cameras.<name>.topic", "seed_count", "weather"):
        assert f"| `{name}` |" in text, name


def test_given_values_follow_rcl_order_and_node_keys(tmp_path):
    wildcard, own = tmp_path / "a.yaml", tmp_path / "b.yaml"
    wildcard.write_text("/**:\n  ros__parameters:\n    rate: 5.0\n    width: 320\n")
    own.write_text("/ns:\n  cam:\n    ros__parameters:\n      rate: fast\n")
    argv = ["prog", "--ros-args", "--params-file", str(wildcard), "--params-file", str(own),
            "-p", "height:=[1, 2]", "-p", "other:width:=1", "--", "-p", "x:=1"]  # fmt: skip
    assert given_values(argv, "/ns/cam") == {"rate": "fast", "width": 320, "height": [1, 2]}
    assert given_values(argv, "/cam2") == {"rate": 5.0, "width": 320, "height": [1, 2]}


def sim_node(context, name=None, **kwargs):
    return SimCameraNode(name or f"sim_{uuid.uuid4().hex[:8]}", context=context, **kwargs)


SIM_CASES = {
    "wrong type": ({"rate": "fast"}, "rate 'fast': expected a double such as 10.0, got a string"),
    "int for a double": ({"rate": 5}, "rate 5: expected a double such as 10.0, got an integer"),
    "out of range": ({"width": 8}, "width 8: expected an integer in [16, 8192]"),
    "not a choice": ({"weather": "snow"}, "weather 'snow' is not one of '', 'clear', 'rain'"),
    "misspelled": ({"seed_cont": 4}, "seed_cont 4: no such parameter (did you mean seed_count?)"),
}


@pytest.mark.parametrize("case", list(SIM_CASES))
def test_sim_camera_override_that_cannot_be_applied_stops_configure(context, case):
    values, expected = SIM_CASES[case]
    node = sim_node(
        context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
    )
    try:
        assert node.trigger_configure() == FAILURE
        assert expected in node.last_error and node.last_error.startswith("parameters: ")
        assert not node._pubs, "nothing was created"
    finally:
        node.destroy_node()


def test_sim_camera_wrong_type_in_a_second_wildcard_file_is_not_silently_dropped(context, tmp_path):
    second = tmp_path / "second.yaml"
    second.write_text("/**:\n  ros__parameters:\n    rate: fast\n")
    node = sim_node(
        context,
        cli_args=["--ros-args", "--params-file", str(ROOT / "config" / "sim_camera.yaml"),
                  "--params-file", str(second)],
    )  # fmt: skip
    try:
        assert node.get_parameter("rate").value == 10.0  # what rcl kept
        assert node.trigger_configure() == FAILURE
        assert "rate 'fast': expected a double such as 10.0, got a string" in node.last_error
    finally:
        node.destroy_node()


def test_sim_camera_live_and_configure_time_parameters(context):
    node = sim_node(context, parameter_overrides=[Parameter("autostart", value=False)])
    try:
        # unconfigured: a configure-time parameter may still be set, and is then used
        (ok,) = node.set_parameters([Parameter("width", value=96)])
        assert ok.successful
        assert node.trigger_configure() == SUCCESS and node._cfg.width == 96
        (refused,) = node.set_parameters([Parameter("width", value=128)])
        assert not refused.successful and "width is read at configure" in refused.reason
        assert "node is inactive" in refused.reason and node.get_parameter("width").value == 96
        (bad,) = node.set_parameters([Parameter("compressed_format", value="gif")])
        assert not bad.successful and "compressed_format 'gif' is not one of" in bad.reason
        (live,) = node.set_parameters([Parameter("frame_id", value="cam_2")])
        assert live.successful and node.get_parameter("frame_id").value == "cam_2"
        (start_only,) = node.set_parameters([Parameter("autostart", value=True)])
        assert not start_only.successful
        assert node.trigger_cleanup() == SUCCESS
        (again,) = node.set_parameters([Parameter("width", value=128)])
        assert again.successful
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("rate:=fast", "rate 'fast': expected a double"),
        ("weather:=snow", "weather 'snow' is not one of"),
    ],
    ids=["wrong type", "not a choice"],
)
def test_sim_camera_module_refuses_a_bad_parameter_in_one_line(domain_id, rule, expected):
    proc = run_module(
        domain_id, "--params-file", "config/sim_camera.yaml", "-p", rule,
        "-r", f"__ns:=/pvt_test_{uuid.uuid4().hex[:8]}", module="pvt_mtl_ros.ros.sim_camera_node",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out = "".join(proc.communicate(timeout=120))
    assert proc.returncode == 1 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and expected in errors[0], out

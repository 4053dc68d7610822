"""The perception node against hostile input (issue 17): the pixel limit and corrupt JPEGs in
the node, diagnostics over a recent window, latency from stamps on another clock, frames lost
before the node, one-line errors at the process entry, and SIGINT with a batch in flight."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import ros_required  # noqa: F401
import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    DET,
    RELIABLE,
    SCENE,
    SEG,
    hostile,
    run_module,
    smooth_rgb,
    wait_for,
)
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from pvt_mtl_ros.ros.diagnostics import NodeStats, diagnostics_msg
from pvt_mtl_ros.ros.image_conversion import (
    array_to_compressed_msg,
    array_to_image_msg,
)
from pvt_mtl_ros.ros.inprocess import InProcess

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


@pytest.fixture(scope="module")
def checkpoint(make_tiny_checkpoint):
    return make_tiny_checkpoint(SCENE, DET, SEG, (64, 64), name="robust")


@pytest.fixture(scope="module")
def node(context, checkpoint):
    with hostile(
        context, checkpoint, {"raw": "raw", "jpeg": "compressed"}, max_pixels=100_000
    ) as n:
        yield n.start()


def raw(n, h, w, **stamp):
    return n.next_header(array_to_image_msg(smooth_rgb(h, w), "rgb8"), **stamp)


def test_frames_over_max_pixels_are_dropped_as_too_large(node):
    before = node.counts("raw")
    node.send("raw", raw(node, 300, 400))  # 120,000 pixels > max_pixels 100,000
    wait_for(lambda: node.counts("raw")["bad"] == before["bad"] + 1, what="the big frame")
    after = node.counts("raw")
    assert after["too_large"] == before["too_large"] + 1
    assert "400x300 = 120,000 pixels is over the max_pixels limit of 100,000" in after["last_error"]
    node.outputs_for("raw", node.send("raw", raw(node, 250, 400)))  # 100,000: served


def test_a_corrupt_jpeg_is_a_bad_frame_in_the_node(node, capfd):
    from test_image_conversion import corrupt_jpeg

    before = node.counts("jpeg")
    msg = node.next_header(CompressedImage(format="jpeg", data=corrupt_jpeg()))
    node.send("jpeg", msg)
    wait_for(lambda: node.counts("jpeg")["bad"] == before["bad"] + 1, what="the corrupt jpeg")
    after = node.counts("jpeg")
    assert after["corrupt"] == before["corrupt"] + 1
    assert after["processed"] == before["processed"]
    good = array_to_compressed_msg(smooth_rgb(40, 48), "jpeg")
    node.outputs_for("jpeg", node.send("jpeg", node.next_header(good)))
    err = capfd.readouterr().err
    assert "camera 'jpeg'" in err and "corrupt JPEG data" in err, err  # logged to rosout


def test_latency_is_not_reported_from_stamps_on_another_clock(node):
    before = node.counts("raw")
    node.outputs_for("raw", node.send("raw", raw(node, 20, 30, sec=42)))  # a camera's own clock
    after = node.counts("raw")
    assert after["stamp_not_clock"] == before["stamp_not_clock"] + 1
    assert len(after["latency"]) == len(before["latency"])  # not averaged in
    node.outputs_for("raw", node.send("raw", raw(node, 20, 30)))  # wall-clock stamp: kept
    latest = node.counts("raw")["latency"][-1]
    assert 0 <= latest < 10, latest


def test_diagnostics_warn_for_a_recent_window_not_forever():
    stats = NodeStats(["cam"])
    stats.count("cam", "received")
    stats.count("cam", "bad", error="unsupported image encoding 'nv21'")

    def status(recent_s):
        msg = diagnostics_msg(stats, "n", "cpu", "eager", None, recent_s=recent_s)
        s = msg.status[1]
        return s.level, s.message, {v.key: v.value for v in s.values}

    level, message, values = status(5.0)
    assert level == WARN and "1 bad frames in the last 5 s" in message, message
    assert "nv21" in message
    time.sleep(0.3)
    level, message, values = status(0.2)  # the bad frame is older than the window
    assert (level, message) == (OK, "ok")
    assert values["bad"] == "1" and "nv21" in values["last error"]  # the total stays


def test_stamps_on_another_clock_say_so_in_diagnostics():
    stats = NodeStats(["cam"])
    stats.count("cam", "received")
    stats.published("cam", 1.7e9, 0.01)  # a stamp of 0 + 1.7e9 s ago: not this clock
    values = {
        v.key: v.value for v in diagnostics_msg(stats, "n", "cpu", "e", None).status[1].values
    }
    assert values["end-to-end latency ms (mean of last)"].startswith("n/a (header stamps are not")
    assert values["stamp_not_clock"] == "1"
    assert values["in-node latency ms (mean of last)"] == "10.0"


PUBLISHER = textwrap.dedent(
    """
    import array, sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("big_frames")
    pub = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
    msg = Image(width=4000, height=3000, encoding="rgb8", step=12000)
    msg.data = array.array("B", bytes(36_000_000))
    deadline = time.time() + 20
    while pub.get_subscription_count() == 0 and time.time() < deadline:
        time.sleep(0.05)
    for _ in range(int(sys.argv[2])):
        pub.publish(msg)
        time.sleep(0.3)
    """
)


@pytest.mark.slow
def test_large_best_effort_frames_lost_before_the_node_are_counted(context, domain_id, checkpoint):
    """4000x3000 rgb8 on the sensor-data QoS from another process: the frames do not arrive
    (DDS fragments lost); the subscription's message-lost event says so in diagnostics."""
    cam = {"cameras.cam.reliability": "best_effort", "cameras.cam.queue_depth": 5}
    with hostile(context, checkpoint, {"cam": "raw"}, **cam) as n:
        n.start()
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
        proc = subprocess.run(
            [sys.executable, "-c", PUBLISHER, f"{n.ns}/cam/image_raw", "10"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: n.counts("cam")["lost"] > 0, timeout=10, what="message-lost events")
        counts = n.counts("cam")
        assert counts["lost"] + counts["received"] <= 10
        assert counts["lost"] >= 5, counts  # most of them: nothing else would tell
        wait_for(lambda: (n.camera_status("cam") or (OK,))[0] == WARN, what="a WARN status")
        level, message, values = n.camera_status("cam")
        assert "lost" in message and int(values["lost"]) == n.counts("cam")["lost"]
        assert values["lost frames detected"] == "yes"


# -- the process entry -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "params file not found: "),
        ("a: [1, 2\n  b: }{\n", "is not valid YAML (line 2)"),
        (b"\xff\xfe\x00garbage", "cannot be read"),
    ],
    ids=["missing", "malformed", "binary"],
)
def test_a_bad_params_file_is_one_line_and_exit_code_2(tmp_path, domain_id, content, expected):
    path = tmp_path / "params.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = run_module(
        domain_id, "--params-file", str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=120)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert proc.returncode == 2, out + err
    assert len(lines) == 1 and lines[0].startswith("perception_node: error: params file"), lines
    assert expected in lines[0], lines


@pytest.mark.slow
def test_sigint_with_a_batch_in_flight_stops_the_worker_before_the_context(
    context, domain_id, make_tiny_checkpoint, tmp_path
):
    """A slow network (big input), a frame just sent, SIGINT: the batch finishes or is
    discarded, never published on a dead context; exit code 0."""
    slow = make_tiny_checkpoint(SCENE, DET, SEG, (640, 640), name="slow")
    ns = "/pvt_sigint_" + os.urandom(4).hex()
    ros = InProcess(context=context)
    probe = ros.node("sigint_probe_" + os.urandom(4).hex())
    pub = probe.create_publisher(Image, f"{ns}/camera/image_raw", RELIABLE)
    got = []
    probe.create_subscription(Detection2DArray, f"{ns}/camera/detections", got.append, RELIABLE)
    ros.spin(probe)
    log = open(tmp_path / "node.log", "w+")
    proc = run_module(
        domain_id,
        "-p", f"checkpoint:={slow}", "-p", "cpu_threads:=1", "-p", "warmup:=false",
        "-p", "backend:=eager",
        "-p", "camera_names:=[camera]", "-p", "cameras.camera.reliability:=reliable",
        "-p", "score_threshold:=0.0", "-r", f"__ns:={ns}", stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None,
                 timeout=120, what="the node to subscribe")  # fmt: skip
        assert proc.poll() is None, log.seek(0) or log.read()
        frame = array_to_image_msg(smooth_rgb(480, 640), "rgb8")
        pub.publish(frame)
        wait_for(lambda: got, timeout=60, what="a first output")  # the node is serving
        pub.publish(frame)
        time.sleep(0.2)  # the worker has taken it: a batch is in flight
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ros.close()
    log.seek(0)
    text = log.read()
    log.close()
    assert "context is invalid" not in text and "Failed to publish" not in text, text
    assert "Traceback" not in text, text
    assert code == 0, text


def test_png_bomb_does_not_reach_the_decoder_in_the_node(node):
    from test_image_conversion import png_bomb

    before = node.counts("jpeg")
    node.send("jpeg", node.next_header(CompressedImage(format="png", data=png_bomb(4000, 4000))))
    wait_for(lambda: node.counts("jpeg")["too_large"] == before["too_large"] + 1, what="bomb")
    assert node.counts("jpeg")["bad"] == before["bad"] + 1
    png = cv2.imencode(".png", smooth_rgb(30, 40))[1]
    good = CompressedImage(format="png", data=np.asarray(png).tobytes())
    node.outputs_for("jpeg", node.send("jpeg", node.next_header(good)))

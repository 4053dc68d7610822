"""The pure message builders of pvt_mtl_ros.ros.messages (no node, no DDS)."""

import ros_required  # noqa: F401
import numpy as np
import pytest
from std_msgs.msg import Header

from pvt_mtl_ros.ros import messages as M
from pvt_mtl_ros.ros.image_conversion import image_msg_to_array


def header():
    h = Header(frame_id="cam0")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def same_header(a, b):
    return (a.frame_id, a.stamp.sec, a.stamp.nanosec) == (b.frame_id, b.stamp.sec, b.stamp.nanosec)


def test_copy_header_is_equal_but_not_shared():
    h = header()
    c = M.copy_header(h)
    assert same_header(c, h) and c is not h
    c.stamp.sec = 0
    assert h.stamp.sec == 12


def test_palette_is_stable_and_distinct():
    p = M.palette(300)
    assert p.shape == (300, 3) and p.dtype == np.uint8
    assert (p[0] == 0).all() and tuple(p[1]) == (128, 0, 0)  # VOC: background, aeroplane
    assert len({tuple(c) for c in p}) == 300
    np.testing.assert_array_equal(M.palette(21), p[:21])


def test_detections_centre_size_and_class_names():
    boxes = np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32)
    msg = M.detections_msg(
        header(), boxes, np.array([0.9, 0.25]), np.array([1, 0]), ["car", "person"]
    )
    assert same_header(msg.header, header()) and len(msg.detections) == 2
    d = msg.detections[0]
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (30.0, 50.0)
    assert (d.bbox.size_x, d.bbox.size_y) == (40.0, 60.0)
    assert d.results[0].hypothesis.class_id == "person"
    assert d.results[0].hypothesis.score == pytest.approx(0.9)
    assert msg.detections[1].results[0].hypothesis.class_id == "car"
    assert same_header(d.header, header())
    empty = M.detections_msg(header(), np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), ["car"])
    assert empty.detections == []


def test_detection_builder_reuses_objects_and_equals_the_plain_builder():
    """Frame after frame, growing and shrinking: the same message as detections_msg builds,
    nothing left over from an earlier frame, label ids past the names as numbers."""
    names = ["car", "person"]
    build = M.DetectionArrayBuilder(names)
    rng = np.random.default_rng(0)
    first = None
    for n in (3, 7, 2, 0, 5):
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(1, 50, (n, 2))]).astype(np.float32)
        scores, labels = rng.uniform(0, 1, n), rng.integers(0, 3, n)
        h = header()
        h.stamp.sec = n
        got = build(h, boxes, scores, labels)
        assert got == M.detections_msg(h, boxes, scores, labels, names)
        assert len(got.detections) == n and got.header is not h
        first = first or got.detections[:1]
    assert build.pool[0] is first[0] and len(build.pool) == 7  # objects kept, not rebuilt


@pytest.mark.parametrize("dtype, encoding", [(np.uint8, "mono8"), (np.uint16, "mono16")])
def test_segmentation_image_keeps_ids_and_size(dtype, encoding):
    mask = (np.arange(6 * 7).reshape(6, 7) * (37 if dtype == np.uint16 else 5)).astype(dtype)
    msg = M.segmentation_msg(header(), mask)
    assert (msg.height, msg.width, msg.encoding) == (6, 7, encoding)
    assert same_header(msg.header, header())
    np.testing.assert_array_equal(image_msg_to_array(msg, "passthrough"), mask)


def test_colorize_maps_ids_and_blacks_out_unknown_ids():
    colours = M.palette(3)
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    out = M.colorize(mask, colours)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 1], colours[1])
    np.testing.assert_array_equal(out[1, 1], [0, 0, 0])
    msg = M.segmentation_color_msg(header(), mask, colours)
    assert msg.encoding == "rgb8" and (msg.height, msg.width) == (2, 2)


def test_scene_top_k_most_likely_first():
    probs = np.array([0.1, 0.5, 0.15, 0.25], np.float32)
    msg = M.scene_msg(header(), probs, ["a", "b", "c", "d"], 3)
    assert [r.class_id for r in msg.results] == ["b", "d", "c"]
    assert msg.results[0].score == pytest.approx(0.5)
    assert len(M.scene_msg(header(), probs, list("abcd"), 10).results) == 4


def test_label_info_class_map():
    msg = M.label_info_msg(header(), ["road", "sky"], 0.3)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "road"), (1, "sky")]
    assert msg.threshold == pytest.approx(0.3)


def test_debug_image_draws_without_touching_the_input():
    rgb = np.full((60, 80, 3), 100, np.uint8)
    out = M.debug_image(
        rgb,
        mask=np.ones((60, 80), np.uint8),
        mask_colours=M.palette(2),
        boxes=np.array([[5, 5, 40, 30]], np.float32),
        scores=np.array([0.8]),
        labels=np.array([0]),
        det_names=["car"],
        scene="urban 0.9",
    )
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (rgb == 100).all() and not np.array_equal(out, rgb)


def camera_info(width=640, height=480):
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id, info.header.stamp.sec = "camera_optical", 1
    info.d = [0.1, -0.2, 0.0, 0.0, 0.0]
    info.k = [500.0, 0.0, 320.0, 0.0, 520.0, 240.0, 0.0, 0.0, 1.0]
    info.p = [500.0, 0.0, 320.0, -50.0, 0.0, 520.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.roi = RegionOfInterest(x_offset=64, y_offset=48, width=320, height=240)
    return info


def test_camera_info_takes_the_output_header_and_scales_to_its_size():
    info = camera_info()
    same = M.camera_info_msg(info, header(), (480, 640), (480, 640))
    assert same_header(same.header, header())  # the output's, not the camera_info's own
    assert (same.width, same.height, same.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(same.k, info.k)
    np.testing.assert_array_equal(same.p, info.p)
    np.testing.assert_allclose(same.d, info.d)
    half_width = M.camera_info_msg(info, header(), (480, 640), (240, 320))  # 0.5 both axes
    np.testing.assert_allclose(half_width.k, [250, 0, 160, 0, 260, 120, 0, 0, 1])
    np.testing.assert_allclose(half_width.p, [250, 0, 160, -25, 0, 260, 120, 0, 0, 0, 1, 0])
    assert (half_width.width, half_width.height) == (320, 240)
    roi = half_width.roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (32, 24, 160, 120)
    wide = M.camera_info_msg(info, header(), (480, 640), (480, 1280))  # x only
    np.testing.assert_allclose(wide.k, [1000, 0, 640, 0, 520, 240, 0, 0, 1])
    np.testing.assert_allclose(info.k[0], 500.0)  # the input is not changed


def test_image_marker_is_one_line_list_of_four_edges_per_box():
    from visualization_msgs.msg import ImageMarker

    boxes = np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32)
    msg = M.image_marker_msg(header(), boxes, np.array([1, 0]))
    assert same_header(msg.header, header()) and msg.type == ImageMarker.LINE_LIST
    assert len(msg.points) == len(msg.outline_colors) == 8 * len(boxes)
    first = [(p.x, p.y) for p in msg.points[:8]]
    edges = {frozenset(first[i : i + 2]) for i in range(0, 8, 2)}
    corners = [(10, 20), (50, 20), (50, 80), (10, 80)]
    assert edges == {frozenset((corners[i], corners[(i + 1) % 4])) for i in range(4)}
    c0, c1 = msg.outline_colors[0], msg.outline_colors[8]  # per class, as the debug image
    assert (c0.r, c0.g, c0.b) != (c1.r, c1.g, c1.b)
    assert (round(c0.r * 255), round(c0.g * 255), round(c0.b * 255)) == tuple(M.BOX_COLOURS[1])
    assert M.image_marker_msg(header(), np.zeros((0, 4)), np.zeros(0, int)).points == []


def test_image_annotations_outline_and_label_each_box_with_the_input_stamp():
    msgs = pytest.importorskip("foxglove_msgs.msg", reason="foxglove_msgs is not importable")

    boxes = np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32)
    scores, labels = np.array([0.91, 0.5]), np.array([1, 7])
    msg = M.image_annotations_msg(header(), boxes, scores, labels, ["car", "person"])
    assert isinstance(msg, msgs.ImageAnnotations) and msg.circles == []
    assert len(msg.points) == len(msg.texts) == len(boxes)
    for ann in [*msg.points, *msg.texts]:
        assert (ann.timestamp.sec, ann.timestamp.nanosec) == (12, 345)
    assert len({id(a.timestamp) for a in [*msg.points, *msg.texts]}) == 4  # none shared
    first = msg.points[0]
    assert first.type == msgs.PointsAnnotation.LINE_LOOP and first.thickness == 2.0
    assert [(p.x, p.y) for p in first.points] == [(10, 20), (50, 20), (50, 80), (10, 80)]
    colour = first.outline_color  # the class's colour, as the debug image and the marker
    assert (round(colour.r * 255), round(colour.g * 255), round(colour.b * 255)) == tuple(
        M.BOX_COLOURS[1]
    )
    assert first.outline_color != msg.points[1].outline_color
    assert [t.text for t in msg.texts] == ["person 0.91", "7 0.50"]  # an unknown id: its number
    top = msg.texts[1].position  # bottom-left of the text: kept inside the image
    assert (top.x, top.y) == (0.0, msg.texts[1].font_size)
    assert (msg.texts[0].position.x, msg.texts[0].position.y) == (10.0, 20.0)


def test_image_annotations_scene_label_and_an_empty_frame():
    pytest.importorskip("foxglove_msgs.msg", reason="foxglove_msgs is not importable")

    probs = np.array([0.1, 0.7, 0.2])
    scene = M.scene_caption(probs, ["urban", "rural", "highway"])
    assert scene == "rural 0.70"
    msg = M.image_annotations_msg(header(), np.zeros((0, 4)), [], np.zeros(0, int), [], scene=scene)
    assert msg.points == [] and [t.text for t in msg.texts] == ["rural 0.70"]  # clears the boxes
    assert (msg.texts[0].timestamp.sec, msg.texts[0].timestamp.nanosec) == (12, 345)
    assert msg.texts[0].position.x < 10 and msg.texts[0].position.y < 40  # top-left


def test_foxglove_annotations_type_is_none_where_foxglove_msgs_does_not_import(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_foxglove(name, *args, **kwargs):
        if name.startswith("foxglove_msgs"):
            raise ImportError("No module named 'foxglove_msgs'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_foxglove)
    assert M.foxglove_annotations_type() is None
    monkeypatch.undo()
    msgs = pytest.importorskip("foxglove_msgs.msg", reason="foxglove_msgs is not importable")
    assert M.foxglove_annotations_type() is msgs.ImageAnnotations

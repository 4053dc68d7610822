"""Rosbag replay evaluation on bags these tests write with rosbags from the shared samples
(CamVid frames, COCO images; sqlite3 and mcap; raw and compressed) and on the shared
rosbag2/images.bag fixture.

The replay runs in-process from a tiny random-weight checkpoint (outputs are meaningless; what
is checked is that they are counted, written, stamped and scored exactly as the metric code
scores them when called directly on the predictions read back from the output bag).
"""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from pvt_mtl_ros.conventions import CAMVID_CLASSES, COCO_CLASSES
from pvt_mtl_ros.inference.predictor import PredictionResult, predict
from pvt_mtl_ros.metrics import ConfusionMatrix, TopKAccuracy, coco_evaluate
from pvt_mtl_ros.model import (
    DetectionConfig,
    ModelConfig,
)
from pvt_mtl_ros.replay import cli
from pvt_mtl_ros.replay.bag_io import BagSource, typestore
from pvt_mtl_ros.replay.make_bag import make_bag
from pvt_mtl_ros.replay.offline import run_offline
from pvt_mtl_ros.replay.session import ReplayOptions
from pvt_mtl_ros.ros.image_conversion import msg_to_array
from pvt_mtl_ros.ros.inprocess import stamp_ns
from pvt_mtl_ros.ros.outputs import boxes_from_msg

SCENES = ["urban", "highway", "rural"]
FRAMES = 4  # per bag: enough to batch (batch size 3 below) and keep the suite fast
TOPIC = "/camera/image_raw"
NS = "/camera"


@pytest.fixture(scope="module")
def checkpoint(make_tiny_checkpoint):
    """Tiny three-task model: CamVid segmentation, COCO detection, 3 scene classes."""
    return make_tiny_checkpoint(SCENES, COCO_CLASSES, CAMVID_CLASSES)


@pytest.fixture(scope="module")
def camvid(shared_data):
    return shared_data / "camvid" / "val"


def scenes_csv(folder: Path, images: list[Path]) -> Path:
    """Scene labels for the CamVid frames (made up: the test needs some, not true ones)."""
    path = folder / "scenes.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for i, image in enumerate(images):
            w.writerow([image.name, SCENES[i % 2]])
    return path


def build_camvid(tmp_path, camvid, storage="sqlite3", compressed=False, rate=15.0, **kw):
    images = sorted((camvid / "images").iterdir())[:FRAMES]
    bag, gt, n = make_bag(
        camvid / "images",
        tmp_path / f"camvid_{storage}_{compressed}",
        masks=camvid / "labels",
        classes="camvid",
        scenes=scenes_csv(tmp_path, images),
        storage=storage,
        compressed=compressed,
        limit=FRAMES,
        rate=rate,
        **kw,
    )
    assert n == FRAMES
    return bag, gt, images


def replay(tmp_path, bag, checkpoint, *args, name="out"):
    out = tmp_path / name
    argv = [str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]
    code = cli.main([*argv, "--batch-size", "3", "--score-thresh", "0.05", *args])
    path = out / "report.json"
    return code, (json.loads(path.read_text()) if path.is_file() else None), out


def read_bag(path):
    """{topic: [(log_time, msg)]} of a bag, deserialized with the replay's typestore (msg
    None where the bytes are no message: bad frames are copied as recorded)."""
    store = typestore("humble")
    out = {}
    with Reader(path) as reader:
        for conn, t, data in reader.messages():
            try:
                msg = store.deserialize_cdr(data, conn.msgtype)
            except Exception:
                msg = None
            out.setdefault(conn.topic, []).append((t, msg))
    return out


# -- reading bags ------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_camvid_bag_frames_and_pixels(tmp_path, camvid, storage, compressed):
    bag, gt, images = build_camvid(tmp_path, camvid, storage, compressed)
    topic = TOPIC + ("/compressed" if compressed else "")
    source = BagSource(bag)
    assert source.storage == storage
    assert source.select(None) == [topic]
    assert source.frame_count() == FRAMES
    stamps = []
    for frame, path in zip(source.frames(), images, strict=True):
        msg = source.deserialize(frame)
        source_rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        # raw: the decoded file; compressed: the file's own JPEG bytes: both exact
        np.testing.assert_array_equal(msg_to_array(msg), source_rgb)
        stamps.append(stamp_ns(msg.header))
        assert frame.log_time == stamps[-1]
    source.close()
    assert np.allclose(np.diff(stamps), 1e9 / 15, atol=1)
    masks = sorted((gt / "masks" / topic.strip("/")).iterdir())
    assert [int(m.stem) for m in masks] == stamps
    label = cv2.imread(str(camvid / "labels" / f"{images[0].stem}.png"), cv2.IMREAD_UNCHANGED)
    written = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, np.where(label == 11, 255, label))


@pytest.mark.parametrize("distro", ["humble", "jazzy", "kilted"])
def test_bags_of_each_distro(tmp_path, distro):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(getattr(Stores, f"ROS2_{distro.upper()}"))
    msgs = [image_msg(i) for i in range(2)]
    messages = [(TOPIC, "sensor_msgs/msg/Image", i, m) for i, m in enumerate(msgs)]
    bag = write_bag(tmp_path / "bag", messages, "mcap", store)
    source = BagSource(bag, distro)
    source.select(None)
    got = [msg_to_array(source.deserialize(f)) for f in source.frames()]
    source.close()
    for image, msg in zip(got, msgs, strict=True):
        np.testing.assert_array_equal(image, msg.data.reshape(48, 64, 3))


def test_reencoded_jpeg_bag_is_close(tmp_path, camvid):
    bag, _, images = build_camvid(tmp_path, camvid, "mcap", True, jpeg_quality=90)
    source = BagSource(bag)
    source.select(None)
    for frame, path in zip(source.frames(), images, strict=True):
        decoded = msg_to_array(source.deserialize(frame)).astype(np.int16)
        original = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.int16)
        assert decoded.shape == original.shape
        assert np.abs(decoded - original).mean() < 3.0
    source.close()


def test_shared_fixture_bag(tmp_path, shared_data, checkpoint):
    bag = shared_data / "rosbag2" / "images.bag"
    source = BagSource(bag)
    assert source.select(None) == ["/image"]
    frames = [source.deserialize(f) for f in source.frames()]
    source.close()
    assert len(frames) == 3
    for msg in frames:
        assert (msg.encoding, msg.height, msg.width) == ("mono8", 2, 2)
        rgb = msg_to_array(msg)
        np.testing.assert_array_equal(rgb, np.repeat(msg.data.reshape(2, 2, 1), 3, axis=2))

    code, report, out = replay(tmp_path, bag, checkpoint)
    assert code == 0, report
    assert report["frames"]["processed"] == 3 and report["frames"]["with_gt"] == 0
    assert report["metrics"]["overall"] == {}
    written = read_bag(out / "predictions")
    in_stamps = [stamp_ns(m.header) for m in frames]
    for topic in ("/image", "/image/detections", "/image/segmentation", "/image/scene"):
        assert [stamp_ns(m.header) for _, m in written[topic]] == in_stamps, topic
    masks = [m for _, m in written["/image/segmentation"]]
    assert all((m.height, m.width, m.encoding) == (2, 2, "mono8") for m in masks)
    assert len(report["overlays"]) == 3 and all(o["kind"] == "sample" for o in report["overlays"])


# -- scoring ----------------------------------------------------------------------------


def direct_segmentation_and_scene(out, gt, topic):
    """The metric code called directly on the predictions in the output bag."""
    written = read_bag(out / "predictions")
    seg = ConfusionMatrix(len(CAMVID_CLASSES), 255)
    for _, msg in written[f"{NS}/segmentation"]:
        pred = msg.data.reshape(msg.height, msg.width)
        path = gt / "masks" / topic.strip("/") / f"{stamp_ns(msg.header)}.png"
        seg.update(pred, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    labels = {int(row["stamp"]): row["label"] for row in csv.DictReader((gt / "scenes.csv").open())}
    top = TopKAccuracy((1, 5))
    for _, msg in written[f"{NS}/scene"]:
        scores = np.zeros(len(SCENES))
        for hyp in msg.results:
            scores[SCENES.index(hyp.class_id)] = hyp.score
        top.update(scores[None], [SCENES.index(labels[stamp_ns(msg.header)])])
    return written, seg.compute(), top.compute()


@pytest.mark.parametrize(
    "storage,compressed", [("sqlite3", False), ("mcap", True)], ids=["sqlite3-raw", "mcap-jpeg"]
)
def test_replay_camvid_scores_like_the_metric_code(
    tmp_path, camvid, checkpoint, storage, compressed
):
    bag, gt, _ = build_camvid(tmp_path, camvid, storage, compressed)
    topic = TOPIC + ("/compressed" if compressed else "")
    extra = gt / "masks" / topic.strip("/") / "123.png"  # a label no frame has
    shutil.copy(next((gt / "masks" / topic.strip("/")).iterdir()), extra)

    code, report, out = replay(tmp_path, bag, checkpoint, "--gt", str(gt))
    assert code == 0, report
    assert report["status"] == "complete" and report["storage"] == storage
    t = report["topics"][topic]
    assert (t["in_bag"], t["read"], t["processed"], t["with_gt"]) == (FRAMES,) * 4
    assert t["undecodable"] == 0 and t["transport"] == ("compressed" if compressed else "raw")
    assert report["metrics"]["unmatched_gt"]["segmentation"]["count"] == 1

    written, seg, top = direct_segmentation_and_scene(out, gt, topic)
    for scope in (report["metrics"]["overall"], report["metrics"]["topics"][topic]):
        got = scope["segmentation"]
        assert got["frames"] == FRAMES
        assert got["mIoU"] == pytest.approx(seg["mIoU"], abs=1e-12)
        assert got["pixel_accuracy"] == pytest.approx(seg["pixel_accuracy"], abs=1e-12)
        iou = [nan_none(v) for v in got["IoU_per_class"].values()]
        np.testing.assert_allclose(iou, seg["IoU"], atol=1e-12)
        assert scope["classification"]["top1"] == pytest.approx(top["top1"])
        assert scope["classification"]["top5"] == pytest.approx(top["top5"])
    assert "detection" not in report["metrics"]["overall"]  # CamVid has no boxes

    # the output bag: camera copy + predictions + label maps, stamped with the frames' headers
    frame_stamps = [stamp_ns(m.header) for _, m in written[topic]]
    assert len(frame_stamps) == FRAMES
    for out_topic in ("detections", "segmentation", "scene"):
        msgs = written[f"{NS}/{out_topic}"]
        assert [stamp_ns(m.header) for _, m in msgs] == frame_stamps
        assert [t for t, _ in msgs] == frame_stamps  # log time = the frame's log time
        info = written[f"{NS}/{out_topic}/label_info"]
        assert len(info) == 1
    classes = [c.class_name for c in written[f"{NS}/segmentation/label_info"][0][1].class_map]
    assert classes == list(CAMVID_CLASSES)
    with Reader(out / "predictions") as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        digests = {c.msgtype: c.digest for c in reader.connections}
    assert types[f"{NS}/detections"] == "vision_msgs/msg/Detection2DArray"
    assert digests["vision_msgs/msg/Detection2DArray"] == (
        "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968"
    )  # upstream vision_msgs 4.x: the bag opens with the real package's definitions

    kinds = [o["kind"] for o in report["overlays"]]
    assert "worst" in kinds and "best" in kinds
    worst = [o["score"] for o in report["overlays"] if o["kind"] == "worst"]
    best = [o["score"] for o in report["overlays"] if o["kind"] == "best"]
    assert max(worst) <= min(best)
    for o in report["overlays"]:
        assert cv2.imread(str(out / o["file"])) is not None
    md = (out / "report.md").read_text()
    assert "mIoU" in md and "| p50 | p90 | p95 | p99 |" in md
    assert report["latency_ms"]["inference_batch"]["count"] == 2  # 4 frames, batches of 3
    # the one percentile set of pvt_mtl_ros.metrics.latency_stats (p95 is new in replay)
    frame = report["latency_ms"]["frame"]
    assert frame["p50"] <= frame["p90"] <= frame["p95"] <= frame["p99"] <= frame["max"]
    assert report["throughput_fps"] > 0


def test_replay_backend_is_selectable_and_scores_like_eager(tmp_path, camvid, checkpoint):
    """channels_last is FP32 like eager (only the order of float sums differs): the same
    metrics within 1e-3, and the report names the backend that ran."""
    bag, gt, _ = build_camvid(tmp_path, camvid)
    runs = {}
    for backend in ("eager", "channels_last"):
        code, report, out = replay(
            tmp_path, bag, checkpoint, "--gt", str(gt), "--backend", backend, name=backend
        )
        assert code == 0, report
        runs[backend] = report
        assert (
            report["backend"]
            == report["backend_requested"]
            == ("eager" if backend == "eager" else "eager+channels_last")
        )
        assert f"backend: {report['backend']}, " in (out / "report.md").read_text()
    ref, got = runs["eager"]["metrics"]["overall"], runs["channels_last"]["metrics"]["overall"]
    assert got["segmentation"]["frames"] == ref["segmentation"]["frames"] == FRAMES
    for key in ("mIoU", "pixel_accuracy"):
        assert got["segmentation"][key] == pytest.approx(ref["segmentation"][key], abs=1e-3)
    for key in ("top1", "top5"):
        assert got["classification"][key] == pytest.approx(ref["classification"][key], abs=1e-3)


def test_int8_replay_backend_calibrates_on_simulator_frames(tmp_path, checkpoint, monkeypatch):
    """An int8 spec makes an int8 export calibrated on simulator frames of the model's input
    size (inference takes its calibration images from the caller). The export itself is
    replaced by a stand-in that records what it was given."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from pvt_mtl_ros.inference import graph_engines
    from pvt_mtl_ros.model import load_checkpoint
    from pvt_mtl_ros.sim.calibration import CALIBRATION_FRAMES, calibration_frames

    class Exported(Exception):
        pass

    seen = {}

    def fake_export(model, folder, int8, calibration, features=False):
        seen.update(int8=int8, frames=calibration)
        raise Exported

    monkeypatch.setattr(graph_engines, "cached_export", fake_export)
    model = load_checkpoint(checkpoint)
    bag = plain_bag(tmp_path / "bag", n=1)
    opts = ReplayOptions(bag=bag, checkpoint=checkpoint, out=tmp_path / "out",
                         backend="onnxruntime+int8", progress=False)  # fmt: skip
    with pytest.raises(Exported):
        run_offline(opts, model)
    h, w = model.cfg.input_size
    assert seen["int8"] is True
    assert len(seen["frames"]) == CALIBRATION_FRAMES
    assert {(f.shape, f.dtype.name) for f in seen["frames"]} == {((h, w, 3), "uint8")}
    np.testing.assert_array_equal(seen["frames"][1], calibration_frames(h, w, 2)[1])


def test_malformed_backend_is_a_usage_error(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=1)
    with pytest.raises(SystemExit) as exit_info:
        replay(tmp_path, bag, checkpoint, "--backend", "fp33")
    assert exit_info.value.code == 2
    assert "--backend" in capsys.readouterr().err


def test_scoring_matches_class_names_case_insensitively(tmp_path):
    """The one class-name rule (metrics.ClassNames): ground truth naming the model's classes
    in other case and with spaces scores exactly as ground truth that names them alike."""
    from pvt_mtl_ros.replay.ground_truth import GroundTruth, GroundTruthWriter
    from pvt_mtl_ros.replay.score import Scorer

    seg, det = ["road", "sky", "car"], ["car", "person"]
    mask = np.array([[0, 0, 1, 1], [2, 2, 1, 255]], np.uint8)
    pred = PredictionResult(
        boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 40]], np.float32),
        scores=np.array([0.9, 0.8], np.float32),
        labels=np.array([0, 1], np.int64),
        mask=np.array([[0, 1, 1, 1], [2, 0, 1, 0]], np.uint8),
        class_probs=np.array([0.2, 0.7, 0.1], np.float32),
    )
    metrics = []
    for name, rename in (("same", str), ("other_case", lambda n: f" {n.upper()} ")):
        writer = GroundTruthWriter(tmp_path / name, [rename(n) for n in seg],
                                   [rename(n) for n in det])  # fmt: skip
        writer.add_mask(TOPIC, 5, mask)
        boxes = [{"bbox": [0, 0, 10, 10], "class_id": 0}, {"bbox": [20, 20, 10, 20], "class_id": 1}]
        writer.add_boxes(TOPIC, 5, (2, 4), boxes)
        writer.add_scene(TOPIC, 5, rename("highway"))
        writer.close()
        scorer = Scorer(GroundTruth(tmp_path / name), det, seg, SCENES)
        assert scorer.add(TOPIC, 5, pred)[0]
        assert not scorer.warnings, scorer.warnings
        metrics.append(scorer.compute()["overall"])
    same, other = metrics
    assert other["segmentation"] == same["segmentation"]
    assert other["classification"] == same["classification"]
    for key in ("AP", "AP50", "AP75"):
        assert other["detection"][key] == same["detection"][key]
    # per-class figures carry the ground truth's own spelling of each name
    assert list(other["detection"]["AP50_per_class"]) == [" CAR ", " PERSON "]
    assert list(other["detection"]["AP50_per_class"].values()) == pytest.approx([1.0, 1.0])
    assert same["detection"]["AP50"] == pytest.approx(1.0)
    # IoU road 1/3, sky 3/4, car 1/2 (intersection / union of the 7 labelled pixels; the
    # 255 pixel ignored)
    assert same["segmentation"]["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert same["classification"] == {"frames": 1, "top1": 1.0, "top5": 1.0}


def nan_none(value):
    """The report writes nan as null (strict JSON)."""
    return float("nan") if value is None else value


class GtDetector:
    """Stands in for the network on COCO images: boxes from the ground truth, jittered, plus
    false positives, looked up by the decoded image's bytes. Deterministic."""

    def __init__(self, coco_json, images):
        self.cfg = ModelConfig(detection=DetectionConfig(list(COCO_CLASSES)))
        data = json.loads(coco_json.read_text())
        cats = {c["id"]: COCO_CLASSES.index(c["name"]) for c in data["categories"]}
        by_file = {im["file_name"]: im["id"] for im in data["images"]}
        rng = np.random.default_rng(0)
        self.table = {}
        for path in images:
            anns = [a for a in data["annotations"] if a["image_id"] == by_file[path.name]]
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            boxes += rng.normal(0, 4, boxes.shape).astype(np.float32)
            labels = np.array([cats[a["category_id"]] for a in anns], np.int64)
            fp = rng.uniform(0, 200, (2, 4)).astype(np.float32)
            fp[:, 2:] += fp[:, :2] + 20
            self.table[rgb.tobytes()] = PredictionResult(
                boxes=np.concatenate([boxes, fp]),
                scores=rng.uniform(0.1, 1.0, len(boxes) + 2).astype(np.float32),
                labels=np.concatenate([labels, [0, 2]]).astype(np.int64),
            )

    def predict(self, images, **kwargs):
        return [self.table[im.tobytes()] for im in images]


def test_replay_coco_detection_scores_like_pycocotools(tmp_path, shared_data):
    coco = shared_data / "coco128"
    coco_json = coco / "annotations" / "instances.json"
    bag, gt, n = make_bag(
        coco / "images", tmp_path / "coco", coco=coco_json, storage="mcap", compressed=True,
        limit=FRAMES, topic="/front/image_raw",
    )  # fmt: skip
    images = sorted((coco / "images").iterdir())[:FRAMES]
    opts = ReplayOptions(
        bag=bag, checkpoint=Path("gt-detector"), out=tmp_path / "out", gt=gt, batch_size=3,
        progress=False,
    )  # fmt: skip
    report = run_offline(opts, GtDetector(coco_json, images))
    assert report["status"] == "complete"
    assert report["frames"]["processed"] == report["frames"]["with_gt"] == FRAMES

    # pycocotools directly on the boxes read back from the output bag
    written = read_bag(opts.out / "predictions")
    data = json.loads((gt / "detections.json").read_text())
    image_ids = {im["stamp"]: im["id"] for im in data["images"]}
    cat_ids = {c["name"]: c["id"] for c in data["categories"]}
    results = []
    for _, msg in written["/front/detections"]:
        boxes, scores, names = boxes_from_msg(msg)
        for (x1, y1, x2, y2), score, name in zip(boxes.tolist(), scores.tolist(), names):
            results.append({"image_id": image_ids[stamp_ns(msg.header)],
                            "category_id": cat_ids[name], "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})  # fmt: skip
    direct = coco_evaluate(gt / "detections.json", results, per_class=True)
    got = report["metrics"]["overall"]["detection"]
    assert got["frames"] == FRAMES
    assert direct["AP"] > 0.2  # jittered ground truth: clearly better than nothing
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert nan_none(got[key]) == pytest.approx(direct[key], nan_ok=True, abs=1e-9), key
    for name, ap in direct["AP_per_class"].items():
        assert nan_none(got["AP_per_class"][name]) == pytest.approx(ap, nan_ok=True, abs=1e-9)
    assert report["metrics"]["topics"]["/front/image_raw/compressed"]["detection"]["AP"] == (
        pytest.approx(direct["AP"])
    )
    assert {o["score_name"] for o in report["overlays"]} == {"AP50"}


# -- bad bags ----------------------------------------------------------------------------


def write_bag(path, messages, storage="sqlite3", store=None):
    """messages: [(topic, msgtype, log_time, msg object or raw bytes)] via rosbags Writer."""
    store = store or typestore("humble")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            data = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, msgtype)
            writer.write(conns[topic], t, data)
    return path


def image_msg(i, h=48, w=64, **fields):
    T = typestore("humble").types
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=0), frame_id="cam"
    )
    rgb = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
    args = dict(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                data=rgb.reshape(-1))  # fmt: skip
    args.update(fields)
    return T["sensor_msgs/msg/Image"](**args)


def plain_bag(path, n=6, storage="sqlite3", **kw):
    return write_bag(
        path, [(TOPIC, "sensor_msgs/msg/Image", i * 10**8, image_msg(i, **kw)) for i in range(n)],
        storage,
    )  # fmt: skip


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_a_clear_error(tmp_path, checkpoint, capsys, storage):
    bag = plain_bag(tmp_path / "bag", storage=storage)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) // 2])
    code, report, _ = replay(tmp_path, bag, checkpoint)
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot open bag" in err and "truncated or corrupt" in err
    assert report["status"] == "failed" and "cannot open bag" in report["error"]


def test_bag_corrupt_part_way_keeps_what_was_read(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=12, h=120, w=160)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    start = int(len(data) * 0.6)
    data[start : start + 9000] = b"\xff" * 9000  # > 2 pages: a page header is hit
    db.write_bytes(bytes(data))
    code, report, out = replay(tmp_path, bag, checkpoint)
    assert code == 1, capsys.readouterr().err
    assert report["status"] == "bag read error" and "unreadable after" in report["error"]
    read = report["frames"]["read"]
    assert 0 < read < 12
    assert report["frames"]["processed"] == read  # the partial batch was finished too
    written = read_bag(out / "predictions")
    assert len(written[f"{NS}/detections"]) == read
    assert [stamp_ns(m.header) for _, m in written[f"{NS}/segmentation"]] == [
        (100 + i) * 10**9 for i in range(read)
    ]


def test_missing_topic_is_a_clear_error(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=2)
    code, report, _ = replay(tmp_path, bag, checkpoint, "--topics", "/front/image_raw")
    err = capsys.readouterr().err
    assert code == 2
    assert "topic /front/image_raw is not in" in err and TOPIC in err
    assert report["status"] == "failed"


BLOB = "acme_msgs/msg/Blob"


def blob_store():
    store = typestore("humble")
    if BLOB not in store.types:  # the cached typestore is shared by the tests
        store.register(get_types_from_msg("uint8[] payload\nstring note", BLOB))
    return store


def test_unknown_message_type(tmp_path, checkpoint, capsys):
    store = blob_store()
    blob = store.types[BLOB](payload=np.zeros(3, np.uint8), note="lidar")
    messages = [(TOPIC, "sensor_msgs/msg/Image", i * 10**8, image_msg(i)) for i in range(2)]
    messages += [("/lidar/blob", BLOB, 5, blob)]
    bag = write_bag(tmp_path / "bag", messages, "mcap", store)

    code, _, _ = replay(tmp_path, bag, checkpoint, "--topics", "/lidar/blob", name="named")
    err = capsys.readouterr().err
    assert code == 2 and f"has message type {BLOB}, which replay cannot read" in err

    code, report, _ = replay(tmp_path, bag, checkpoint, name="auto")
    assert code == 0
    assert report["frames"]["processed"] == 2
    assert report["ignored_topics"] == {"/lidar/blob": BLOB}

    only_blob = write_bag(tmp_path / "blob_only", [("/lidar/blob", BLOB, 5, blob)], "mcap", store)
    code, _, _ = replay(tmp_path, only_blob, checkpoint, name="none")
    err = capsys.readouterr().err
    assert code == 2 and "no sensor_msgs/msg/Image or CompressedImage topic" in err


def test_undecodable_frames_are_counted_and_skipped(tmp_path, checkpoint):
    store = typestore("humble")
    T = store.types
    bad_jpeg = T["sensor_msgs/msg/CompressedImage"](
        header=image_msg(7).header, format="jpeg", data=np.frombuffer(b"not a jpeg", np.uint8)
    )
    cut = bytes(store.serialize_cdr(image_msg(8), "sensor_msgs/msg/Image"))[:40]
    messages = [
        (TOPIC, "sensor_msgs/msg/Image", 0, image_msg(0)),
        (TOPIC, "sensor_msgs/msg/Image", 1, image_msg(1, step=10)),  # step < row bytes
        (TOPIC, "sensor_msgs/msg/Image", 2, cut),  # CDR cut short
        (TOPIC, "sensor_msgs/msg/Image", 3, image_msg(3)),
        ("/rear/image_raw/compressed", "sensor_msgs/msg/CompressedImage", 4, bad_jpeg),
    ]
    bag = write_bag(tmp_path / "bag", messages)
    code, report, out = replay(tmp_path, bag, checkpoint)
    assert code == 0
    assert report["frames"]["read"] == 5 and report["frames"]["processed"] == 2
    assert report["frames"]["undecodable"] == 3
    assert report["topics"]["/rear/image_raw/compressed"]["undecodable"] == 1
    assert report["warning_count"] == 3
    assert any("cannot deserialize" in w for w in report["warnings"])
    assert any("wrong step" in w for w in report["warnings"])
    assert any("corrupt or unsupported compressed image" in w for w in report["warnings"])
    written = read_bag(out / "predictions")
    assert [stamp_ns(m.header) for _, m in written[f"{NS}/scene"]] == [100 * 10**9, 103 * 10**9]
    assert len(written[TOPIC]) == 4  # the camera topic is copied as recorded, bad frames too


class Interrupting:
    """The real model, until the second batch: then Ctrl-C."""

    def __init__(self, model):
        self.model, self.cfg, self.calls = model, model.cfg, 0

    def predict(self, images, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return predict(self.model, images, **kwargs)


def test_interrupted_run_writes_what_it_computed(tmp_path, camvid, checkpoint):
    from pvt_mtl_ros.model import load_checkpoint

    bag, gt, _ = build_camvid(tmp_path, camvid)
    opts = ReplayOptions(bag=bag, checkpoint=checkpoint, out=tmp_path / "out", gt=gt,
                         batch_size=2, progress=False)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_offline(opts, Interrupting(load_checkpoint(checkpoint)))
    report = json.loads((opts.out / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["frames"]["processed"] == 2
    assert report["metrics"]["overall"]["segmentation"]["frames"] == 2
    written = read_bag(opts.out / "predictions")
    assert len(written[f"{NS}/segmentation"]) == 2

    # a second run refuses to mix with the first unless asked
    with pytest.raises(Exception, match="earlier replay"):
        run_offline(opts, load_checkpoint(checkpoint))


# -- real-time mode ----------------------------------------------------------------------


def test_realtime_replay_through_the_perception_node(tmp_path, camvid, checkpoint):
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable")
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not importable")
    pytest.importorskip("pvt_mtl_ros.ros.perception_node")
    import random

    # 4 Hz: time for the node between frames on a loaded machine, but not always
    bag, gt, _ = build_camvid(tmp_path, camvid, "mcap", True, rate=4.0)
    domain = str(random.randint(1, 100))
    code, report, out = replay(
        tmp_path, bag, checkpoint, "--mode", "realtime", "--gt", str(gt), "--domain-id", domain,
        "--backend", "channels_last",
    )  # fmt: skip
    assert code == 0, report
    assert report["backend"] == "eager+channels_last"  # the node's parameter, as it ran
    topic = TOPIC + "/compressed"
    done = report["frames"]["processed"]
    assert report["published"] == FRAMES and report["frames"]["read"] == FRAMES
    assert 1 <= done and done + report["dropped"] == FRAMES
    assert report["node_counts"][topic]["received"] == FRAMES
    assert report["latency_ms"]["end_to_end"]["count"] == done
    assert report["latency_ms"]["end_to_end"]["p50"] > 0
    assert report["input_fps"] > 0

    written, seg, top = direct_segmentation_and_scene(out, gt, topic)
    got = report["metrics"]["overall"]
    assert got["segmentation"]["frames"] == done
    assert got["segmentation"]["mIoU"] == pytest.approx(seg["mIoU"], abs=1e-12)
    assert got["classification"]["top1"] == pytest.approx(top["top1"])
    in_stamps = [stamp_ns(m.header) for _, m in written[topic]]
    out_stamps = [stamp_ns(m.header) for _, m in written[f"{NS}/segmentation"]]
    assert len(out_stamps) == done and set(out_stamps) <= set(in_stamps)
    # predictions land in the bag at the frame's log time plus the latency measured
    for t, m in written[f"{NS}/detections"]:
        assert t > stamp_ns(m.header)
    # streaming: every published frame scored, by its own output, an older one or none
    st = report["streaming"]
    assert st["segmentation"]["frames"] == st["scene"]["frames"] == FRAMES
    for task in ("segmentation", "scene"):
        assert sum(st["in_force"][task].values()) == FRAMES
        assert st["in_force"][task].get("own", 0) <= done
    assert "Streaming (every frame with ground truth" in (out / "report.md").read_text()


# -- defaults and what the predictions bag records (issue 18) ---------------------------------


def test_replay_without_checkpoint_uses_the_shipped_model(tmp_path, capsys):
    """No --checkpoint: the perception node's default, found by the node's own rule."""
    from pvt_mtl_ros.ros.perception_node import PARAMETERS, resolve_checkpoint

    shipped = resolve_checkpoint(PARAMETERS["checkpoint"].default)
    bag = plain_bag(tmp_path / "bag", n=1)
    out = tmp_path / "out"
    assert cli.main([str(bag), "--out", str(out), "--no-progress", "--overlays", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"] == str(shipped) and shipped.name == "demo_mtl_b0.pt"
    assert report["frames"]["processed"] == 1
    assert report["model"]["tasks"] == ["classification", "detection", "segmentation"]


def test_a_missing_shipped_model_is_one_line(tmp_path, capsys, monkeypatch):
    from pvt_mtl_ros.ros import perception_node

    monkeypatch.setattr(perception_node, "PACKAGE_DIR", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    bag = plain_bag(tmp_path / "bag", n=1)
    assert cli.main([str(bag), "--no-progress"]) == 2
    assert "no --checkpoint given" in one_error_line(capsys)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_prediction_bag_records_qos_and_the_colour_mask(tmp_path, checkpoint, storage):
    """Camera topics keep the QoS they were recorded with; label_info is transient-local (a
    late RViz still gets the class map), the other outputs are offered as the node offers
    them; <ns>/segmentation/color holds the mask in the node's colours (rgb8)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosTime
    from rosbags.interfaces import QosReliability as Rel

    from pvt_mtl_ros.visualize import colorize, palette

    t = QosTime(0, 0)
    camera_qos = [Qos(QosHistory.KEEP_LAST, 7, Rel.BEST_EFFORT, QosDurability.VOLATILE, t, t,
                      QosLiveliness.AUTOMATIC, t, False)]  # fmt: skip
    store = typestore("humble")
    bag = tmp_path / "bag"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(bag, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store,
                                     offered_qos_profiles=camera_qos)  # fmt: skip
        for i in range(2):
            msg = image_msg(i)
            writer.write(conn, i * 10**8, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    code, report, out = replay(tmp_path, bag, checkpoint)
    assert code == 0, report
    with Reader(out / "predictions") as reader:
        profiles = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert profiles[TOPIC] == camera_qos
    for name in ("detections", "segmentation", "scene"):
        (latched,) = profiles[f"{NS}/{name}/label_info"]
        assert (latched.durability, latched.reliability) == (
            QosDurability.TRANSIENT_LOCAL, Rel.RELIABLE)  # fmt: skip
    for name in ("detections", "segmentation", "segmentation/color", "scene"):
        (offered,) = profiles[f"{NS}/{name}"]
        assert (offered.durability, offered.reliability, offered.depth) == (
            QosDurability.VOLATILE, Rel.RELIABLE, 5)  # fmt: skip

    written = read_bag(out / "predictions")
    masks = {stamp_ns(m.header): msg_to_array(m, "passthrough") for _, m in
             written[f"{NS}/segmentation"]}  # fmt: skip
    colours = written[f"{NS}/segmentation/color"]
    assert len(colours) == len(masks) == 2
    for _, msg in colours:
        assert msg.encoding == "rgb8"
        expected = colorize(masks[stamp_ns(msg.header)], palette(len(CAMVID_CLASSES)))
        np.testing.assert_array_equal(msg_to_array(msg, "rgb8"), expected)
    assert report["output_topics"][f"{NS}/segmentation/color"] == 2


STREAM_GT_X = [0, 100, 200, 300]  # the one car's left edge per frame
STREAM_MASKS = [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]  # road 0, sky 1
STREAM_SCENES = ["urban", "urban", "rural", "rural"]
STREAM_ANSWERS = {0: (10.15, 0.6), 2: (10.35, 0.5), 3: (10.38, 0.9)}  # frame: arrival, score


def test_realtime_streaming_metrics_equal_a_hand_computation(tmp_path):
    """Replay's real-time streaming figures on a fixed sequence. Four frames published at
    10.0 + 0.1 i s; the deadline is one period later, the period being the median interval
    of the publications so far (none yet for frame 0: its deadline is its own time). Frame 1
    is superseded; each answer equals its own frame's ground truth:

        frame     0      1      2      3
        deadline  10.0   10.2   10.3   10.4
        answer    10.15  -      10.35  10.38
        in force  none   0      0      3        (frame 2's answer is late for frame 2)
    """
    from pvt_mtl_ros.metrics import DetectionEvaluator
    from pvt_mtl_ros.replay.ground_truth import GroundTruth, GroundTruthWriter
    from pvt_mtl_ros.replay.streaming import StreamingScore

    def stamp(i):
        return 10**10 + i * 10**8

    def box(i):
        return [[STREAM_GT_X[i], 10, STREAM_GT_X[i] + 50, 60]]

    writer = GroundTruthWriter(tmp_path / "gt", ["road", "sky"], ["car"])
    for i in range(4):
        writer.add_mask(TOPIC, stamp(i), np.array([STREAM_MASKS[i]], np.uint8))
        writer.add_boxes(TOPIC, stamp(i), (1, 4), [{"bbox": [STREAM_GT_X[i], 10, 50, 50],
                                                    "class_id": 0}])  # fmt: skip
        writer.add_scene(TOPIC, stamp(i), STREAM_SCENES[i])
    writer.close()
    tasks = ["classification", "detection", "segmentation"]
    score = StreamingScore(GroundTruth(tmp_path / "gt"), [TOPIC], tasks, ["road", "sky"])

    def answer(i):
        other = "urban" if STREAM_SCENES[i] == "rural" else "rural"
        return {
            "detections": (np.array(box(i), np.float64), np.array([STREAM_ANSWERS[i][1]]),
                           ["car"]),
            "segmentation": np.array([STREAM_MASKS[i]], np.uint8),
            "scene": [(STREAM_SCENES[i], 0.8), (other, 0.2)],
        }  # fmt: skip

    events = sorted([(10.0 + 0.1 * i, "publish", i) for i in range(4)]
                    + [(t, "answer", i) for i, (t, _) in STREAM_ANSWERS.items()])  # fmt: skip
    for t, what, i in events:
        if what == "publish":
            score.published(TOPIC, stamp(i), t)
        else:
            for kind, payload in answer(i).items():
                score.output(TOPIC, kind, stamp(i), payload, t)
        score.close_due(t)
    m = score.metrics()
    for task in ("detections", "segmentation", "scene"):
        assert m["in_force"][task] == {"none": 1, "older": 2, "own": 1}, task
    # scene: frame 0 none (wrong), 1 frame 0's urban (right), 2 frame 0's urban (wrong: rural),
    # 3 its own rural (right)
    assert m["scene"] == {"accuracy": pytest.approx(2 / 4), "frames": 4}
    # masks: road TP 1 + 2 = 3 of gt 6 and predicted 4 (union 7); sky TP 2 + 1 + 4 = 7 of
    # gt 10 and predicted 8 (union 11); frame 0's 4 pixels are all missed
    assert m["segmentation"] == {"mIoU": pytest.approx((3 / 7 + 7 / 11) / 2), "frames": 4}
    # boxes: frame 3's is found (0.9); frames 1 and 2 hold frame 0's box (0.6): two false
    # boxes and two misses; frame 0 none. One of four cars at precision 1: 26 of COCO's 101
    # recall points
    ref = DetectionEvaluator()
    for i, j in enumerate([None, 0, 0, 3]):
        pred = answer(j)["detections"] if j is not None else (np.zeros((0, 4)), [], [])
        ref.update(box(i), ["car"], *pred)
    assert m["detection"]["frames"] == 4
    assert m["detection"]["AP50"] == pytest.approx(ref.compute()["AP50"])
    assert m["detection"]["AP50"] == pytest.approx(26 / 101)


# -- hostile input, and never losing input or earlier results (issue 17.2, 17.6, 17.7) --------


def one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("pvt-mtl-replay: error: "), err
    return err[0]


def tree(folder):
    """{relative path: bytes} of every file under `folder`: to show nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_with_a_mistyped_bag_keeps_the_earlier_results(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=2)
    code, _, out = replay(tmp_path, bag, checkpoint)
    assert code == 0
    before = tree(out)
    code, _, _ = replay(tmp_path, tmp_path / "bga", checkpoint, "--overwrite")
    assert code == 2 and "bag not found" in one_error_line(capsys)
    assert tree(out) == before  # nothing deleted before the input was opened
    assert not list(tmp_path.glob(".out.replay*")), "a staging folder was left behind"


def test_an_input_bag_inside_the_output_is_refused(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    bag = plain_bag(out / "predictions", n=2)  # the input is where results would go
    before = tree(bag)
    code, _, _ = replay(tmp_path, bag, checkpoint, "--overwrite")
    assert code == 2
    assert "which a replay into" in one_error_line(capsys)
    assert tree(bag) == before
    # and the output inside the input bag folder: replay never writes into its input
    code, _, _ = replay(tmp_path, bag, checkpoint, name="out/predictions")
    assert code == 2 and "is inside the input bag" in one_error_line(capsys)
    code, _, _ = replay(tmp_path, bag, checkpoint, name="out/predictions/sub")
    assert code == 2 and "is inside the input bag" in one_error_line(capsys)
    assert tree(bag) == before


def test_overwrite_replaces_the_results_in_one_move(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=4)
    code, first, out = replay(tmp_path, bag, checkpoint, "--max-frames", "1")
    assert code == 0 and first["frames"]["processed"] == 1
    (out / "notes.txt").write_text("mine")  # not the replay's: left alone
    code, second, _ = replay(tmp_path, bag, checkpoint, "--overwrite")
    assert code == 0 and second["frames"]["processed"] == 4
    assert second["output_bag"] == str(out / "predictions")
    assert len(read_bag(out / "predictions")[f"{NS}/detections"]) == 4
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "out"]  # no staging left


def test_a_run_that_does_not_complete_keeps_the_earlier_results(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=12, h=120, w=160)
    code, _, out = replay(tmp_path, bag, checkpoint)
    assert code == 0
    before = tree(out)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    start = int(len(data) * 0.6)
    data[start : start + 9000] = b"\xff" * 9000  # the bag breaks part-way
    db.write_bytes(bytes(data))
    code, _, _ = replay(tmp_path, bag, checkpoint, "--overwrite")
    assert code == 1
    err = capsys.readouterr().err
    assert f"the earlier replay in {out} is kept" in err, err
    assert tree(out) == before
    partial = json.loads((tmp_path / "out.incomplete" / "report.json").read_text())
    assert partial["status"] == "bag read error" and partial["frames"]["processed"] > 0


def test_out_pointing_at_a_file_is_one_line(tmp_path, checkpoint, capsys):
    bag = plain_bag(tmp_path / "bag", n=1)
    (tmp_path / "out").write_text("not a folder")
    code, _, _ = replay(tmp_path, bag, checkpoint)
    assert code == 2 and "is a file, not a folder" in one_error_line(capsys)
    assert (tmp_path / "out").read_text() == "not a folder"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "metadata.yaml is empty"),
        (bytes(range(256)) * 2, "metadata.yaml is not text"),
        (b"a: [1, 2\n  b: }{", "metadata.yaml is not readable YAML"),
        (b"just: words\n", "has no rosbag2_bagfile_information"),
    ],
    ids=["empty", "binary", "malformed", "foreign"],
)
def test_garbage_metadata_yaml_is_one_line(tmp_path, checkpoint, capsys, content, expected):
    bag = plain_bag(tmp_path / "bag", n=1)
    (bag / "metadata.yaml").write_bytes(content)
    code, _, _ = replay(tmp_path, bag, checkpoint)
    line = one_error_line(capsys)
    assert code == 2 and expected in line, line


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"gt.json": bytes(range(256)) * 3}, "gt.json: not a JSON text file"),
        ({"gt.json": b'{"format": "pvt_mtl_ros/replay-gt-v1", "segmentation": [1]}'},
         "'segmentation' must be"),
        ({"gt.json": b'{"format": "pvt_mtl_ros/replay-gt-v1"}', "detections.json": b"[1, 2]"},
         "detections.json: not a COCO instances file"),
        ({"gt.json": b'{"format": "pvt_mtl_ros/replay-gt-v1"}',
          "detections.json": b'{"images": [{"stamp": 1}]}'},
         "detections.json: not a COCO instances file"),
        ({"gt.json": b'{"format": "pvt_mtl_ros/replay-gt-v1"}', "scenes.csv": b"\xff\xfe\x00x"},
         "scenes.csv: not a readable CSV text file"),
    ],
    ids=["binary-manifest", "segmentation-list", "detections-list", "image-without-id", "csv"],
)  # fmt: skip
def test_garbage_ground_truth_is_one_line(tmp_path, checkpoint, capsys, files, expected):
    bag = plain_bag(tmp_path / "bag", n=1)
    gt = tmp_path / "gt"
    gt.mkdir()
    for name, data in files.items():
        (gt / name).write_bytes(data)
    code, _, _ = replay(tmp_path, bag, checkpoint, "--gt", str(gt))
    line = one_error_line(capsys)
    assert code == 2 and expected in line, line


def test_a_checkpoint_with_a_wrong_config_is_one_line(tmp_path, checkpoint, capsys):
    import torch

    payload = torch.load(checkpoint, weights_only=True)
    for config in ("garbage", {"backbone": "no_such_net"}, {"input_size": "big"}):
        payload["config"] = config
        torch.save(payload, tmp_path / "bad.pt")
        code, _, _ = replay(tmp_path, plain_bag(tmp_path / "bag", n=1), tmp_path / "bad.pt")
        line = one_error_line(capsys)
        assert code == 2 and "model config" in line, line
        shutil.rmtree(tmp_path / "bag")


def test_zero_processed_frames_is_not_complete(tmp_path, checkpoint, capsys):
    bad = [(TOPIC, "sensor_msgs/msg/Image", i, image_msg(i, step=10)) for i in range(3)]
    code, report, _ = replay(tmp_path, write_bag(tmp_path / "bag", bad), checkpoint)
    assert code == 1
    assert report["status"] == "no frames" and "none of the 3 frames read" in report["error"]
    assert "no frames" in capsys.readouterr().err


def test_a_corrupt_jpeg_in_the_bag_is_a_warning_not_a_frame(tmp_path, checkpoint):
    from test_image_conversion import corrupt_jpeg

    T = typestore("humble").types
    jpeg = T["sensor_msgs/msg/CompressedImage"](
        header=image_msg(0).header, format="jpeg", data=np.frombuffer(corrupt_jpeg(), np.uint8)
    )
    good = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].reshape(-1)
    ok = T["sensor_msgs/msg/CompressedImage"](header=image_msg(1).header, format="jpeg", data=good)
    topic = "/camera/image_raw/compressed"
    messages = [(topic, "sensor_msgs/msg/CompressedImage", i, m) for i, m in enumerate([jpeg, ok])]
    code, report, _ = replay(tmp_path, write_bag(tmp_path / "bag", messages), checkpoint)
    assert code == 0
    assert report["frames"]["processed"] == 1 and report["frames"]["undecodable"] == 1
    assert report["warning_count"] == 1 and "corrupt JPEG data" in report["warnings"][0]


@pytest.mark.parametrize("limit", ["0", "-100"])
def test_make_bag_refuses_a_limit_below_one(tmp_path, capsys, limit):
    from pvt_mtl_ros.replay import make_bag as make_bag_cli

    (tmp_path / "images").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        make_bag_cli.main([str(tmp_path / "images"), "--out", str(tmp_path / "o"),
                           "--limit", limit])  # fmt: skip
    assert exit_info.value.code == 2
    assert f"--limit must be at least 1, got {limit}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

"""Reading camera frames from rosbag2 bags and writing bags, with rosbags (no ROS 2 needed).

The typestore holds the distro's standard messages plus vision_msgs, registered from the
project's own definitions in interfaces/vision_msgs/msg (the files the standalone install
builds), so the bags we write carry the same type hashes as the real package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

IMAGE_TYPES = {
    "sensor_msgs/msg/Image": "raw",
    "sensor_msgs/msg/CompressedImage": "compressed",
}
DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 8  # rosbag2 metadata version: the oldest rosbags writes, for the widest readers


def qos(depth: int, latched: bool = False) -> Qos:
    """A reliable keep-last publisher profile as rosbag2 records it (offered_qos_profiles);
    `latched`: transient-local, so a late subscriber of a replayed bag still gets it. Zero
    times are rmw's defaults (no deadline, lifespan or lease)."""
    zero = QosTime(0, 0)
    durability = QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)  # fmt: skip


# What the perception node offers (ros/perception_node.py OUTPUT_QOS and LATCHED_QOS): the
# predictions bag records its outputs with it, so `ros2 bag play` republishes them alike.
OUTPUT_QOS = qos(5)
LATCHED_QOS = qos(1, latched=True)


class ReplayError(RuntimeError):
    """A problem the user must fix (bag, topic, ground truth, output folder); said plainly."""


class BagReadError(ReplayError):
    """The bag became unreadable part-way; `count` messages were read before it."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


def vision_msgs_dir() -> Path:
    """The folder of vision_msgs .msg files: the checkout's interfaces/ first, then an
    installed copy (share/pvt_mtl_ros/interfaces/..., or the vision_msgs package itself)."""
    candidates = [Path(__file__).resolve().parents[2] / "interfaces" / "vision_msgs" / "msg"]
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(":"))]
    for prefix in prefixes:
        share = Path(prefix) / "share"
        candidates.append(share / "pvt_mtl_ros" / "interfaces" / "vision_msgs" / "msg")
        candidates.append(share / "vision_msgs" / "msg")
    for folder in candidates:
        if (folder / "Detection2DArray.msg").is_file():
            return folder
    raise ReplayError(
        "vision_msgs message definitions not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )


@cache
def typestore(distro: str = "humble") -> Any:
    """The distro's typestore with vision_msgs registered (cached: building it takes ~0.1 s)."""
    if distro not in DISTROS:
        raise ReplayError(f"unknown ROS distro {distro!r}; use one of {sorted(DISTROS)}")
    store = get_typestore(DISTROS[distro])
    types: dict[str, Any] = {}
    for path in sorted(vision_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def bag_storage(path: Path) -> str:
    """'sqlite3' or 'mcap' for a bag folder or a single storage file."""
    files = [path] if path.is_file() else list(path.iterdir())
    if any(f.suffix == ".mcap" for f in files):
        return "mcap"
    return "sqlite3"


def check_metadata(path: Path) -> None:
    """A bag folder's metadata.yaml is text, YAML and rosbag2's (rosbags' own errors for
    these are a bare 'NoneType' or UnicodeDecodeError)."""
    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return  # a single .db3/.mcap file, or rosbags says what is missing
    where = f"cannot open bag {path}: {meta.name}"
    try:
        data = yaml.safe_load(meta.read_text())
    except UnicodeDecodeError:
        raise ReplayError(f"{where} is not text (corrupt, or not a rosbag2 folder)") from None
    except (OSError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())
        raise ReplayError(f"{where} is not readable YAML: {reason}") from None
    if data is None:
        raise ReplayError(f"{where} is empty (a bag whose recording never finished?)")
    if not isinstance(data, dict) or "rosbag2_bagfile_information" not in data:
        raise ReplayError(f"{where} has no rosbag2_bagfile_information: not a rosbag2 bag")


@dataclass
class RawFrame:
    """One camera message as stored: topic, bag log time and the serialized bytes."""

    topic: str
    msgtype: str
    log_time: int  # ns, the bag's receive time
    data: bytes
    connection: Any


@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    count: int


class BagSource:
    """An opened input bag; `frames()` yields the selected camera topics' messages in order."""

    def __init__(self, path: str | Path, distro: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ReplayError(f"bag not found: {self.path}")
        check_metadata(self.path)
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as err:  # ReaderError, apsw/sqlite errors, bad yaml, ...
            raise ReplayError(
                f"cannot open bag {self.path}: {type(err).__name__}: {err} "
                "(truncated or corrupt bag, or not a rosbag2 folder/.db3/.mcap file)"
            ) from err
        self.storage = bag_storage(self.path)
        distro = distro or (self.reader.ros_distro or "").lower()
        self.distro = distro if distro in DISTROS else "humble"
        self.typestore = typestore(self.distro)
        self.topics = {
            name: TopicInfo(name, info.msgtype or "<mixed types>", info.msgcount)
            for name, info in self.reader.topics.items()
        }
        self.selected: list[str] = []

    def image_topics(self) -> list[str]:
        return sorted(t for t, info in self.topics.items() if info.msgtype in IMAGE_TYPES)

    def select(self, topics: list[str] | None) -> list[str]:
        """Validate the requested topics (default: every image topic); raise ReplayError
        naming what the bag holds instead."""
        images = self.image_topics()
        listing = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(self.topics.items()))
        if not topics:
            if not images:
                raise ReplayError(
                    f"no sensor_msgs/msg/Image or CompressedImage topic in {self.path}; "
                    f"it holds: {listing or 'nothing'}"
                )
            self.selected = images
            return images
        for topic in topics:
            if topic not in self.topics:
                raise ReplayError(
                    f"topic {topic} is not in {self.path}; image topics: "
                    f"{', '.join(images) or 'none'} (all topics: {listing or 'none'})"
                )
            msgtype = self.topics[topic].msgtype
            if msgtype not in IMAGE_TYPES:
                raise ReplayError(
                    f"topic {topic} has message type {msgtype}, which replay cannot read: "
                    f"it needs {' or '.join(IMAGE_TYPES)}"
                )
        self.selected = list(dict.fromkeys(topics))
        return self.selected

    def ignored_topics(self) -> dict[str, str]:
        return {t: i.msgtype for t, i in sorted(self.topics.items()) if t not in self.selected}

    def frame_count(self) -> int:
        return sum(self.topics[t].count for t in self.selected)

    def frames(self) -> Iterator[RawFrame]:
        """Messages of the selected topics by log time. A read failure part-way (corrupt
        page, cut chunk) raises BagReadError after the frames read so far."""
        connections = [c for c in self.reader.connections if c.topic in self.selected]
        count = 0
        try:
            for conn, log_time, data in self.reader.messages(connections=connections):
                yield RawFrame(conn.topic, conn.msgtype, log_time, bytes(data), conn)
                count += 1
        except Exception as err:
            raise BagReadError(
                f"bag {self.path} became unreadable after {count} messages: "
                f"{type(err).__name__}: {err}",
                count,
            ) from err

    def deserialize(self, frame: RawFrame) -> Any:
        return self.typestore.deserialize_cdr(frame.data, frame.msgtype)

    def close(self) -> None:
        if self.reader.is_open:
            self.reader.close()


class BagSink:
    """A new bag written message by message; `close()` (also on errors) makes it readable."""

    def __init__(self, path: str | Path, storage: str = "sqlite3", distro: str = "humble") -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise ReplayError(f"unknown bag storage {storage!r}; use one of {sorted(STORAGES)}")
        if self.path.exists():
            raise ReplayError(f"output bag {self.path} exists already; remove it or pick another")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = typestore(distro)
        self.writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self.writer.open()
        self.connections: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def _connection(
        self, topic: str, msgtype: str, source: Any = None, profiles: list[Qos] | None = None
    ) -> Any:
        key = (topic, msgtype)
        if key not in self.connections:
            msgdef = rihs01 = None
            if source is not None and source.msgdef.data and source.digest:
                # Copy the recorded definition: the bytes we copy were serialized with it.
                msgdef, rihs01 = source.msgdef.data, source.digest
            if profiles is None:  # a copied topic keeps the QoS it was recorded with
                profiles = list(getattr(getattr(source, "ext", None), "offered_qos_profiles", []))
            self.connections[key] = self.writer.add_connection(
                topic, msgtype, typestore=self.typestore, msgdef=msgdef, rihs01=rihs01,
                offered_qos_profiles=profiles,
            )  # fmt: skip
            self.counts[topic] = 0
        return self.connections[key]

    def write(self, topic: str, log_time: int, msg: Any, profile: Qos = OUTPUT_QOS) -> None:
        """Serialize a rosbags message object and write it; `profile`: the QoS the topic's
        connection records (the first write of a topic sets it)."""
        msgtype = msg.__msgtype__
        data = self.typestore.serialize_cdr(msg, msgtype)
        self.writer.write(self._connection(topic, msgtype, profiles=[profile]), log_time, data)
        self.counts[topic] += 1

    def copy(self, frame: RawFrame, topic: str | None = None) -> None:
        """Write an input message's bytes unchanged, with the QoS recorded for them."""
        topic = topic or frame.topic
        conn = self._connection(topic, frame.msgtype, frame.connection)
        self.writer.write(conn, frame.log_time, frame.data)
        self.counts[topic] += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

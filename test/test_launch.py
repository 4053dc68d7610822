"""The ROS 2 entry points for real: launch/perception.launch.py through `ros2 launch` and
`launch.LaunchService`, `ros2 run`, scripts/setup_launch.sh and a colcon build of the package.

`make setup-launch` installs launch, launch_ros, ros2cli and colcon (in a venv of its own) and
registers the package in the venv's ament index; where it has not run (CI) these tests skip and
say so. Each launch is checked with a probe node in a private rclpy context: a frame in on the
remapped image topic, a Detection2DArray out under the launch's namespace, with the values of
a params-file override. Every wait is bounded.
"""

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import ros_required  # noqa: F401
import pytest
import yaml
from node_harness import LATCHED, RELIABLE, WAIT_S, Probe, smooth_rgb, wait_for
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from pvt_mtl_ros.ros.image_conversion import array_to_image_msg
from pvt_mtl_ros.ros.inprocess import InProcess

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
ROS2 = VENV / "bin" / "ros2"
COLCON = Path(os.environ.get("PVT_COLCON", VENV / "colcon" / "bin" / "colcon"))
UP_S = 180.0  # node start: python, torch and the checkpoint on a loaded 2-core machine
MAX_DETECTIONS = 7  # the params-file override the probe checks for


def _launch_missing() -> str | None:
    for module in ("launch", "launch_ros", "ros2launch", "ros2run"):
        try:
            with warnings.catch_warnings():  # lark, which launch imports, uses sre_parse
                warnings.simplefilter("ignore", DeprecationWarning)
                importlib.import_module(module)
        except ImportError:
            return f"{module} is not installed in {VENV} (make setup-launch installs it)"
    if not ROS2.is_file():
        return f"no ros2 command in {VENV}/bin (make setup-launch installs ros2cli)"
    if not (VENV / "share/ament_index/resource_index/packages/pvt_mtl_ros").is_file():
        return f"pvt_mtl_ros is not registered in the ament index of {VENV} (make setup-launch)"
    return None


LAUNCH_MISSING = _launch_missing()
needs_launch = pytest.mark.skipif(LAUNCH_MISSING is not None, reason=str(LAUNCH_MISSING))
needs_colcon = pytest.mark.skipif(
    not COLCON.is_file(), reason=f"colcon not found at {COLCON} (make setup-launch makes it)"
)


def ros_env(domain_id, **extra) -> dict:
    """The environment `source .venv/bin/activate` gives after setup-launch, on our domain."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1", **extra)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AMENT_PREFIX_PATH", str(VENV))
    return env


@pytest.fixture(scope="module")
def checkpoint(make_tiny_checkpoint):
    return make_tiny_checkpoint(["urban", "rural"], ["car", "person"], ["road", "sky", "other"])


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    """config/perception.yaml with the values the probe checks (and a fast start)."""
    tree = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    params = tree["/**"]["ros__parameters"]
    params.update(score_threshold=0.0, max_detections=MAX_DETECTIONS, warmup=False, cpu_threads=1)
    # the launch is under test, not the backends: eager starts in seconds (auto exports to
    # OpenVINO first) and stops well within launch's 5 s before it escalates to SIGTERM
    params["backend"] = "eager"
    params["cameras"]["camera"]["reliability"] = "reliable"
    path = tmp_path_factory.mktemp("params") / "override.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


class LaunchProbe:
    """node_harness's probe of `<namespace>/camera/detections`, publishing to the remapped
    `image_topic`, spun on the module's context (conftest's)."""

    def __init__(self, context, namespace, image_topic):
        self.ros = InProcess(context=context)
        self.probe = Probe(self.ros, namespace, {}, label_info=False)
        self.probe.subscribe("camera/detections", Detection2DArray)
        self.probe.subscribe("camera/detections/label_info", LabelInfo, LATCHED)
        self.pub = self.probe.node.create_publisher(Image, image_topic, RELIABLE)
        self.ros.spin(self.probe.node)

    def serve_one(self, abort=lambda: False):
        """Wait until the node is active (its latched label_info), send a frame until its
        detections come back (a reliable subscription may still be matching), return them."""

        def up():
            assert not abort(), "the launch ended before the node came up"
            return self.probe.messages("camera/detections/label_info")

        wait_for(up, UP_S, "the node to come up")
        wait_for(lambda: self.pub.get_subscription_count() > 0, what="the node's subscription")
        frame = array_to_image_msg(smooth_rgb(96, 128), "rgb8")
        frame.header.frame_id, frame.header.stamp.sec = "launch_probe", 4242
        deadline = time.monotonic() + WAIT_S
        while not self.probe.messages("camera/detections") and time.monotonic() < deadline:
            self.pub.publish(frame)
            time.sleep(0.5)
        detections = self.probe.messages("camera/detections")
        assert detections, "no detections came back for the frame"
        return detections[0]

    def node_names(self):
        return set(self.probe.node.get_node_names_and_namespaces())

    def close(self):
        self.ros.close()


def assert_served(msg, probe, namespace):
    assert (msg.header.frame_id, msg.header.stamp.sec) == ("launch_probe", 4242)
    # random weights, score_threshold 0: the cap of the params file is what limits the count
    assert len(msg.detections) == MAX_DETECTIONS
    assert ("perception_node", namespace) in probe.node_names()


def names():
    tag = uuid.uuid4().hex[:10]
    return f"/pvt_launch_{tag}", f"/pvt_launch_cam_{tag}/image"


# -- the launch file alone -------------------------------------------------------------------


def load_launch_module():
    spec = importlib.util.spec_from_file_location("perception_launch", ROOT / "launch" /
                                                  "perception.launch.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_params_file_without_ament_prefix_path_is_the_source_tree(monkeypatch):
    pytest.importorskip("launch", reason="the ROS 2 launch package is not installed here")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed here")
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # ament_index raises OSError then
    assert load_launch_module().default_params_file() == str(ROOT / "config" / "perception.yaml")


@needs_launch
def test_default_params_file_is_the_registered_share_directory(monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(VENV))
    path = Path(load_launch_module().default_params_file())
    assert path == VENV / "share" / "pvt_mtl_ros" / "config" / "perception.yaml"
    assert path.resolve() == (ROOT / "config" / "perception.yaml").resolve()  # a file symlink


# -- ros2 launch / ros2 run ------------------------------------------------------------------


@needs_launch
def test_activate_makes_the_venv_the_ament_prefix_of_ros2():
    """`source .venv/bin/activate` alone (no AMENT_PREFIX_PATH before) lets ros2 find us."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        ["bash", "-c", f"source '{VENV}/bin/activate' && ros2 pkg prefix pvt_mtl_ros"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == str(VENV)


def start_ros2(args, log, domain_id):
    # stdin not a terminal: launch is non-interactive and passes SIGINT on to the node itself;
    # a session of its own so that nothing else signals it
    return subprocess.Popen(
        [str(ROS2), *args], cwd=log.parent, env=ros_env(domain_id), stdin=subprocess.DEVNULL,
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@needs_launch
@pytest.mark.slow
def test_ros2_launch_serves_under_a_namespace_and_stops_cleanly_on_sigint(
    context, domain_id, checkpoint, params_file, tmp_path
):
    namespace, image_topic = names()
    log = tmp_path / "ros2_launch.log"
    proc = start_ros2(
        ["launch", "pvt_mtl_ros", "perception.launch.py", f"namespace:={namespace}",
         f"image_topic:={image_topic}", f"params_file:={params_file}",
         f"checkpoint:={checkpoint}", "device:=cpu", "log_level:=warn"],
        log, domain_id,
    )  # fmt: skip
    probe = LaunchProbe(context, namespace, image_topic)
    try:
        msg = probe.serve_one(abort=lambda: proc.poll() is not None)
        assert_served(msg, probe, namespace)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        stop(proc)
        probe.close()
    out = log.read_text()
    assert "process has finished cleanly" in out, out  # the node exited 0, not killed
    assert "loaded" not in out, out  # log_level:=warn reached the node: no INFO lines


@needs_launch
def test_ros2_launch_fails_when_the_node_fails_to_configure(domain_id, tmp_path):
    missing = tmp_path / "absent.pt"
    log = tmp_path / "ros2_launch.log"
    proc = start_ros2(["launch", "pvt_mtl_ros", "perception.launch.py",
                       f"checkpoint:={missing}", "device:=cpu"], log, domain_id)  # fmt: skip
    try:
        assert proc.wait(timeout=UP_S) == 1, log.read_text()
    finally:
        stop(proc)
    out = log.read_text()
    assert f"checkpoint not found: {missing}" in out, out
    assert "perception_node-1 exited with code 1" in out, out
    assert "\x1b[" not in out, out  # no terminal emulation: no colour codes in the node's ERROR


@needs_launch
def test_ros2_run_finds_the_registered_executable(domain_id, tmp_path):
    missing = tmp_path / "absent.pt"
    log = tmp_path / "ros2_run.log"
    proc = start_ros2(["run", "pvt_mtl_ros", "perception_node", "--ros-args",
                       "-p", f"checkpoint:={missing}", "-p", "device:=cpu"],
                      log, domain_id)  # fmt: skip
    try:
        assert proc.wait(timeout=UP_S) == 1, log.read_text()
    finally:
        stop(proc)
    assert f"checkpoint not found: {missing}" in log.read_text()  # it was our node that ran


# -- launch.LaunchService --------------------------------------------------------------------


def launch_service(monkeypatch, domain_id, **arguments):
    """A LaunchService including the installed launch file, as `ros2 launch` does."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    for name, value in ros_env(domain_id).items():  # the node process inherits this process's env
        monkeypatch.setenv(name, value)
    path = Path(get_package_share_directory("pvt_mtl_ros")) / "launch" / "perception.launch.py"
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(path)),
        launch_arguments={k: str(v) for k, v in arguments.items()}.items(),
    )
    service = LaunchService(noninteractive=True)
    service.include_launch_description(LaunchDescription([include]))
    return service


@needs_launch
@pytest.mark.slow
def test_launch_service_serves_the_launch_file_and_shuts_down(
    context, domain_id, checkpoint, params_file, monkeypatch
):
    from osrf_pycommon.process_utils import get_loop

    namespace, image_topic = names()
    service = launch_service(monkeypatch, domain_id, namespace=namespace, image_topic=image_topic,
                             params_file=params_file, checkpoint=checkpoint,
                             device="cpu")  # fmt: skip
    probe = LaunchProbe(context, namespace, image_topic)
    ended = threading.Event()
    result = {}

    def drive():
        try:
            result["msg"] = probe.serve_one(abort=ended.is_set)
            result["names"] = probe.node_names()
        except Exception as error:  # reported by the test thread below
            result["error"] = error
        finally:
            service.shutdown()  # thread-safe: SIGINT to the node, which exits 0
            # shutdown() gave this thread an asyncio loop (osrf_pycommon's get_loop) that
            # nothing closes; closed here, not at interpreter exit where its __del__ fails
            get_loop().close()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        code = service.run()  # the main thread, as launch requires
    finally:
        ended.set()
        driver.join(UP_S)
        probe.close()
    if "error" in result:
        raise result["error"]
    assert code == 0  # the node exited 0 (the launch file raises on a non-zero exit)
    msg = result["msg"]
    assert (msg.header.frame_id, len(msg.detections)) == ("launch_probe", MAX_DETECTIONS)
    assert ("perception_node", namespace) in result["names"]


@needs_launch
def test_launch_service_returns_nonzero_when_the_node_fails_to_configure(
    monkeypatch, domain_id, tmp_path
):
    service = launch_service(
        monkeypatch, domain_id, checkpoint=tmp_path / "absent.pt", device="cpu"
    )
    assert service.run() == 1


# -- scripts/setup_launch.sh -----------------------------------------------------------------


def setup_launch(*args, **env):
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_launch.sh"), *map(str, args)],
        env=dict(os.environ, VENV=str(VENV), **env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def fake_checkouts(root, version="0.0.1"):
    """The four repositories, each with the package.xml that names its version."""
    repos = {"launch": "launch", "launch_ros": "launch_ros", "ros2cli": "ros2cli",
             "rcl_interfaces": "composition_interfaces"}  # fmt: skip
    for repo, package in repos.items():
        (root / repo / package).mkdir(parents=True)
        (root / repo / package / "package.xml").write_text(f"<version>{version}</version>\n")
    return root


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "source folder {src} does not exist"),
        ("not_a_checkout", "{src}/launch is not a checkout of ros2/launch"),
        ("wrong_version", "{src}/launch is version 0.0.1, want 3.7.1"),
        ("no_clone", "cannot clone file:///nonexistent/pvt_launch/launch at 3.7.1"),
    ],
)
def test_setup_launch_fails_loudly_on_bad_sources(case, expected, tmp_path):
    src = tmp_path / "src"
    env = {}
    if case == "not_a_checkout":
        (src / "launch").mkdir(parents=True)
    elif case == "wrong_version":
        fake_checkouts(src)
    args = [] if case == "no_clone" else [src]
    if case == "no_clone":  # forced past the stamp, nothing reachable to clone from
        env = dict(SETUP_LAUNCH_FORCE="1", ROS2_GIT_BASE="file:///nonexistent/pvt_launch",
                   ROS2_CLONE_DIR=str(tmp_path / "clones"))  # fmt: skip
    result = setup_launch(*args, **env)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("setup_launch: error: "), result.stderr
    assert expected.format(src=src) in errors[0]


@needs_launch
def test_setup_launch_again_only_refreshes_the_registration():
    stamp = VENV / ".pvt_mtl_ros-setup-launch"
    before = stamp.stat().st_mtime if stamp.exists() else None
    result = setup_launch()  # no sources, no network needed once installed
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout, result.stdout
    assert stamp.stat().st_mtime == before
    link = VENV / "share" / "pvt_mtl_ros" / "launch" / "perception.launch.py"
    assert link.is_symlink() and link.resolve() == (ROOT / "launch" / "perception.launch.py")


# -- colcon ----------------------------------------------------------------------------------

COLCON_ENV_FILES = ("hook/", "package.", "local_setup.")  # colcon's shell hooks, not ours


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    """`colcon build --symlink-install` of a copy of the checkout in a temporary workspace."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(ROOT, ws / "src" / "pvt_mtl_ros", ignore=shutil.ignore_patterns(
        ".venv", ".git", "outputs", "runs", "build", "install", "log", "__pycache__",
        "*.egg-info", ".pytest_cache", ".ruff_cache"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env["PATH"] = f"{COLCON.parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(COLCON), "build", "--symlink-install", "--packages-select", "pvt_mtl_ros",
         "--event-handlers", "console_cohesion+"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 package finished" in result.stdout + result.stderr, result.stdout
    return ws / "install" / "pvt_mtl_ros"


def layout(prefix: Path) -> set[str]:
    """Files of the package under an ament prefix, relative to it."""
    marker = "share/ament_index/resource_index/packages/pvt_mtl_ros"
    files = {marker} if (prefix / marker).is_file() else set()
    share = prefix / "share" / "pvt_mtl_ros"
    files |= {
        f"share/pvt_mtl_ros/{p.relative_to(share)}"
        for p in share.rglob("*")
        if not p.is_dir() and not str(p.relative_to(share)).startswith(COLCON_ENV_FILES)
    }
    files |= {f"lib/pvt_mtl_ros/{p.name}" for p in (prefix / "lib" / "pvt_mtl_ros").iterdir()}
    return files


@needs_colcon
def test_colcon_symlink_install_of_the_package(colcon_install):
    src = colcon_install.parents[1] / "src" / "pvt_mtl_ros"
    share = colcon_install / "share" / "pvt_mtl_ros"
    for name in ("package.xml", "launch/perception.launch.py", "config/perception.yaml"):
        # with setuptools >= 80 in colcon's venv this silently becomes a copy
        assert (share / name).is_symlink(), f"{name} was copied, not symlinked"
        assert (share / name).resolve() == (src / name).resolve()
    marker = colcon_install / "share/ament_index/resource_index/packages/pvt_mtl_ros"
    assert marker.is_file()
    node = colcon_install / "lib" / "pvt_mtl_ros" / "perception_node"
    assert node.is_file() and os.access(node, os.X_OK)


@needs_colcon
@needs_launch
def test_venv_registration_has_the_layout_of_colcon_symlink_install(colcon_install):
    """setup_launch.sh's registration in the venv, file for file what colcon installs (less
    colcon's shell hooks), each a file symlink (ros2launch's walk skips folder symlinks)."""
    assert layout(VENV) == layout(colcon_install)
    share = VENV / "share" / "pvt_mtl_ros"
    for path in share.rglob("*"):
        assert path.is_symlink() != path.is_dir(), f"{path}: want real folders, file symlinks"


@needs_colcon
@needs_launch
def test_ros2_launch_finds_the_launch_file_in_the_colcon_install(colcon_install, domain_id):
    env = ros_env(domain_id, AMENT_PREFIX_PATH=str(colcon_install))
    result = subprocess.run(
        [str(ROS2), "launch", "pvt_mtl_ros", "perception.launch.py", "--show-args"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for argument in ("'namespace':", "'image_topic':", "'params_file':", "'log_level':"):
        assert argument in result.stdout, result.stdout
    prefix = subprocess.run([str(ROS2), "pkg", "prefix", "pvt_mtl_ros"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert prefix.stdout.strip() == str(colcon_install), prefix.stdout + prefix.stderr

"""The package as ROS 2 tools and users see it: package.xml, setup.py data files, lint."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_validates_with_catkin_pkg():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    pkg = catkin_pkg.parse_package(ROOT / "package.xml")
    pkg.validate()
    assert pkg.package_format == 3 and pkg.name == "pvt_mtl_ros"
    assert pkg.get_build_type() == "ament_python"
    exec_deps = {d.name for d in pkg.exec_depends}
    for dep in (
        "rclpy",
        "sensor_msgs",
        "std_msgs",
        "vision_msgs",
        "cv_bridge",
        "diagnostic_msgs",
        "launch",
        "launch_ros",
    ):
        assert dep in exec_deps, dep
    assert "python3-pytest" in {d.name for d in pkg.test_depends}


def test_setup_installs_every_launch_and_config_file_and_the_marker():
    from distutils.core import run_setup

    from setuptools import distutils  # noqa: F401  (setuptools provides run_setup)

    dist = run_setup(str(ROOT / "setup.py"), stop_after="init")
    installed = {(dest, src) for dest, files in dist.data_files for src in files}
    expected = {
        ("share/ament_index/resource_index/packages", "resource/pvt_mtl_ros"),
        ("share/pvt_mtl_ros", "package.xml"),
    }
    expected |= {
        ("share/pvt_mtl_ros/launch", f"launch/{p.name}")
        for p in (ROOT / "launch").glob("*.launch.py")
    }
    expected |= {
        ("share/pvt_mtl_ros/config", f"config/{p.name}") for p in (ROOT / "config").glob("*.yaml")
    }
    assert expected <= installed
    assert (ROOT / "resource" / "pvt_mtl_ros").is_file()
    scripts = {s.split("=")[0].strip() for s in dist.entry_points["console_scripts"]}
    assert "pvt-mtl-info" in scripts
    assert all(p.startswith("pvt_mtl_ros") for p in dist.packages), dist.packages


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (make setup installs it)")
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

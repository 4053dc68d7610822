"""ament_python package definition; also the standalone (pip) install."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pvt_mtl_ros"


def data_files() -> list[tuple[str, list[str]]]:
    """What ROS 2 tools look for under share/: the ament marker, package.xml, launch, config."""
    return [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml"))),
        (f"share/{PACKAGE}/config/sil", sorted(glob("config/sil/*.yaml"))),
        # the vision_msgs definitions rosbags registers when writing prediction bags
        (
            f"share/{PACKAGE}/interfaces/vision_msgs/msg",
            sorted(glob("interfaces/vision_msgs/msg/*.msg")),
        ),
    ]


setup(
    name=PACKAGE,
    version="0.1.0",
    # `training/` is the offline module run from the checkout; it is not installed.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=data_files(),
    package_data={PACKAGE: ["weights/*.pt", "weights/*.md"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="pvt_mtl_ros maintainers",
    maintainer_email="maintainers@pvt-mtl-ros.dev",
    description="Multi-task PVT v2 perception (classification, detection, segmentation) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "pvt-mtl-info = pvt_mtl_ros.model.info:main",
            "pvt-mtl-demo = pvt_mtl_ros.demo:main",
            "pvt-mtl-replay = pvt_mtl_ros.replay.cli:main",
            "pvt-mtl-make-bag = pvt_mtl_ros.replay.make_bag:main",
            "pvt-mtl-sil = pvt_mtl_ros.sil.cli:main",
            "perception_node = pvt_mtl_ros.ros.perception_node:main",
            "sim_camera_node = pvt_mtl_ros.ros.sim_camera_node:main",
        ],
    },
)

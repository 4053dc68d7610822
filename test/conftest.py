"""Shared fixtures: the real labelled samples under ../shared/data (read-only)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """The ONNX exports the node and the replay tool keep between starts
    ($XDG_CACHE_HOME/pvt_mtl_ros/onnx) go to a folder of this run, not the user's ~/.cache;
    node processes the tests start inherit it."""
    cache = tempfile.mkdtemp(prefix="pvt_mtl_test_cache_")
    os.environ["XDG_CACHE_HOME"] = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared samples; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared samples not found at {SHARED_DATA} (see README: Test data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory):
    """Factory of checkpoints of test/tiny_models.py's tiny three-task networks."""

    def make(scene, detection, segmentation, input_size=(128, 160), name="test_tiny"):
        from tiny_models import tiny_model

        from pvt_mtl_ros.model import save_checkpoint

        path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
        return save_checkpoint(path, tiny_model(scene, detection, segmentation, input_size, name))

    return make


@pytest.fixture(scope="session")
def sim_training_args():
    """`training.train` arguments: the simulator demo config (training/configs/demo_sim_b0.yaml)
    cut to seconds (no shared data needed), output in `out`, `sets` as more --set options."""
    import json

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "demo_sim_b0.yaml"

    def args(out, **sets):
        settings = {
            "output_dir": str(out),
            "model.input_size": [96, 128],
            "data.num_workers": 0,
            "data.train.0.frames": 8,
            "data.train.0.frame_size": [96, 128],
            "data.train.0.batch_size": 2,
            "data.val.0.frames": 2,
            "data.val.0.frame_size": [96, 128],
            "train.steps": 2,
            "train.log_every": 1,
            "train.checkpoint_every": 2,
            "train.progress": False,
            "schedule.warmup_steps": 1,
            "eval.latency_runs": 1,
            "eval.latency_warmup": 0,
            **sets,
        }
        return ["--config", str(config)] + [
            arg
            for key, value in settings.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")
        ]

    return args


@pytest.fixture(scope="session")
def ros_yaml_parameters():
    """A ROS 2 parameter file's `/**: ros__parameters` as {"dotted.name": value}, read the way
    the nodes read what they were given (pvt_mtl_ros.ros.parameters.given_values)."""
    from pvt_mtl_ros.ros.parameters import given_values

    return lambda path: given_values(["--ros-args", "--params-file", str(path)], "/any_node")


@pytest.fixture(scope="session")
def domain_id() -> int:
    """This run's private ROS domain (pvt_mtl_ros.ros.inprocess.private_domain): the test
    modules' contexts and the processes and SIL loops they start all join it."""
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable")
    from pvt_mtl_ros.ros.inprocess import private_domain

    return private_domain()


@pytest.fixture(scope="module")
def context(domain_id):
    """A private rclpy context on `domain_id` for one test module, shut down after it; tests
    spin their nodes with InProcess(context=context) and close them themselves."""
    from pvt_mtl_ros.ros.inprocess import InProcess

    with InProcess(domain_id) as ros:
        yield ros.context

"""Every entry point that loads a checkpoint refuses a damaged one (flipped bytes), one with
NaN weights and a pickle payload, each with one line and no code run (issue 17.1): the node,
pvt-mtl-replay, pvt-mtl-info, training --resume, model.init_from, model.pretrained_backbone and
training.evaluate. A resume pair written by runs of two configs is named as such (17.6)."""

import shutil

import pytest
import torch
from test_checkpoint import flip_bytes, nan_checkpoint, pickle_checkpoint

from pvt_mtl_ros.conventions import CAMVID_CLASSES, COCO_CLASSES
from pvt_mtl_ros.model import info
from pvt_mtl_ros.replay import cli as replay_cli
from training import evaluate
from training import train as train_cli

KINDS = ("flipped", "nan", "pickle")
EXPECTED = {
    "flipped": "is corrupt: its weights do not match the digest",
    "nan": "hold NaN or infinite values",
    "pickle": "is not a plain checkpoint",
}


@pytest.fixture(scope="module")
def good(make_tiny_checkpoint):
    return make_tiny_checkpoint(["urban", "rural"], COCO_CLASSES[:6], CAMVID_CLASSES)


@pytest.fixture(scope="module")
def bad(good, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return {
        "flipped": flip_bytes(good, folder / "flipped.pt"),
        "nan": nan_checkpoint(good, folder / "nan.pt"),
        "pickle": pickle_checkpoint(folder / "pickle.pt", folder / "ran"),
    }


@pytest.fixture
def caplog(caplog):
    """pytest's caplog, attached to the training logger too (its console setup stops
    propagation to the root logger)."""
    import logging

    logger = logging.getLogger("training")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def check_logged(caplog, kind, marker):
    """training's CLIs log the error: one record, one line."""
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    check_one_line(errors[0], kind, marker)


def check_one_line(text, kind, marker):
    lines = [line for line in text.splitlines() if EXPECTED[kind] in line]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "weights_only" not in text, text
    assert not marker.exists(), "the pickle ran"
    if kind == "pickle":
        assert "refused for safety" in lines[0]


@pytest.mark.parametrize("kind", KINDS)
def test_replay_refuses(kind, bad, tmp_path, capsys):
    code = replay_cli.main([str(tmp_path / "no_bag"), "--checkpoint", str(bad[kind]),
                            "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert code == 2
    check_one_line(capsys.readouterr().err, kind, bad["pickle"].parent / "ran")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_info_refuses(kind, bad, capsys):
    assert info.main(["--checkpoint", str(bad[kind])]) == 2
    check_one_line(capsys.readouterr().err, kind, bad["pickle"].parent / "ran")


@pytest.mark.parametrize("kind", KINDS)
def test_node_refuses(kind, bad, context):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not importable")
    from rclpy.parameter import Parameter

    from pvt_mtl_ros.ros.perception_node import PerceptionNode

    node = PerceptionNode(
        "hostile_ckpt",
        context=context,
        parameter_overrides=[Parameter("checkpoint", value=str(bad[kind]))],
    )
    try:
        assert not node.trigger_configure() == 1  # lifecycle: not SUCCESS
        check_one_line(node.last_error, kind, bad["pickle"].parent / "ran")
        assert node.state == "unconfigured"
    finally:
        node.destroy_node()


@pytest.mark.parametrize("kind", KINDS)
def test_init_from_refuses(kind, bad, tmp_path, caplog, sim_training_args):
    assert (
        train_cli.main(sim_training_args(tmp_path / "run", **{"model.init_from": str(bad[kind])}))
        == 2
    )
    check_logged(caplog, kind, bad["pickle"].parent / "ran")


@pytest.mark.parametrize("kind", KINDS)
def test_pretrained_backbone_refuses(kind, bad, tmp_path, caplog, sim_training_args):
    args = sim_training_args(tmp_path / "run", **{"model.pretrained_backbone": str(bad[kind])})
    assert train_cli.main(args) == 2
    check_logged(caplog, kind, bad["pickle"].parent / "ran")


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_refuses(kind, bad, tmp_path, caplog, sim_training_args):
    args = sim_training_args(tmp_path / "run")
    code = evaluate.main([*args, "--checkpoint", str(bad[kind]), "--output", str(tmp_path / "e")])
    assert code == 2
    check_logged(caplog, kind, bad["pickle"].parent / "ran")


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory, sim_training_args):
    """A 2-step simulator run: its step-2 checkpoint pair, and a second run's of another
    config (other seed)."""
    folder = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        assert (
            train_cli.main([*sim_training_args(folder / name, seed=seed), "--stop-after", "2"]) == 0
        )
        runs[name] = (seed, folder / name / "checkpoints")
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_resume_refuses(kind, bad, trained_pair, tmp_path, caplog, sim_training_args):
    seed, checkpoints = trained_pair["a"]
    run = tmp_path / "run"
    shutil.copytree(checkpoints.parent, run)
    model_file = run / "checkpoints" / "step_0000002.pt"
    if kind == "pickle":  # the state file itself is hostile
        pickle_checkpoint(
            run / "checkpoints" / "step_0000002.state.pt", bad["pickle"].parent / "ran"
        )
    else:
        shutil.copy(bad[kind] if kind == "nan" else flip_bytes(model_file, tmp_path / "f.pt"),
                    model_file)  # fmt: skip
    assert train_cli.main([*sim_training_args(run, seed=seed), "--resume"]) == 2
    check_logged(caplog, kind, bad["pickle"].parent / "ran")


@pytest.mark.slow
def test_a_resume_pair_of_two_configs_is_named_so(
    trained_pair, tmp_path, caplog, sim_training_args
):
    seed, checkpoints = trained_pair["a"]
    run = tmp_path / "run"
    shutil.copytree(checkpoints.parent, run)
    other = trained_pair["b"][1] / "step_0000002.pt"  # same step, another run's model
    shutil.copy(other, run / "checkpoints" / "step_0000002.pt")
    assert train_cli.main([*sim_training_args(run, seed=seed), "--resume"]) == 2
    err = caplog.text
    assert "are not a pair: they were written by runs with different configs" in err, err
    assert "Traceback" not in err and "different steps" not in err
    assert torch.load(other, weights_only=True)["extra"]["step"] == 2

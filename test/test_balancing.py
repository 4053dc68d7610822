"""Loss balancers: each checked against its paper's rule on inputs whose answer is known."""

import math

import pytest
import torch

from training.balancing import (
    DWA,
    Balancer,
    PCGrad,
    UncertaintyWeighting,
    build_balancer,
    project_conflicting,
)

TASKS = ("classification", "detection", "segmentation")


def test_fixed_weights_sum_only_present_tasks():
    b = Balancer(TASKS, {"detection": 2.0})
    losses = {"classification": torch.tensor(1.5), "detection": torch.tensor(0.5)}
    assert float(b.combine(losses)) == pytest.approx(1.5 + 2.0 * 0.5)
    assert b.weights() == {"classification": 1.0, "detection": 2.0, "segmentation": 1.0}


def test_uncertainty_log_variances_move_to_the_log_of_each_loss():
    # exp(-s) * L + s is smallest at s = log L: a task with a 40x larger loss ends with a
    # 40x smaller weight.
    b = UncertaintyWeighting(("classification", "segmentation"))
    targets = {"classification": 4.0, "segmentation": 0.1}
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        b.combine({t: torch.tensor(v) for t, v in targets.items()}).backward()
        opt.step()
    s = b.log_vars.detach()
    assert float(s[0]) == pytest.approx(math.log(4.0), abs=0.02)
    assert float(s[1]) == pytest.approx(math.log(0.1), abs=0.05)
    w = b.weights()
    assert w["segmentation"] / w["classification"] == pytest.approx(40.0, rel=0.1)


def test_uncertainty_gives_no_gradient_to_absent_tasks():
    b = UncertaintyWeighting(TASKS)
    b.combine({"detection": torch.tensor(2.0)}).backward()
    grad = b.log_vars.grad
    assert grad[0] == 0 and grad[2] == 0 and grad[1] == pytest.approx(1 - 2.0)


def test_dwa_weights_follow_its_formula():
    b = DWA(TASKS, temperature=2.0, period=2)
    # period 1: means 2, 1, 4; period 2: means 1, 1, 4 -> ratios 0.5, 1, 1
    b.update({"classification": 3.0, "detection": 1.0, "segmentation": 4.0})
    b.update({"classification": 1.0, "detection": 1.0, "segmentation": 4.0})
    assert b.weights() == dict.fromkeys(TASKS, 1.0)  # fewer than two periods seen
    b.update({"classification": 1.0, "detection": 0.5, "segmentation": 4.0})
    b.update({"classification": 1.0, "detection": 1.5, "segmentation": 4.0})
    ratios = {"classification": 1.0 / 2.0, "detection": 1.0 / 1.0, "segmentation": 4.0 / 4.0}
    exp = {t: math.exp(r / 2.0) for t, r in ratios.items()}
    expected = {t: 3 * exp[t] / sum(exp.values()) for t in TASKS}
    assert b.weights() == pytest.approx(expected)
    assert sum(b.weights().values()) == pytest.approx(3.0)
    # the falling task (classification) gets less weight than the flat ones
    assert b.weights()["classification"] < b.weights()["detection"]

    # its state survives a state_dict round trip (resume)
    other = DWA(TASKS, temperature=2.0, period=2)
    other.load_state_dict(b.state_dict())
    assert other.weights() == b.weights()
    b.update(dict.fromkeys(TASKS, 1.0))
    other.update(dict.fromkeys(TASKS, 1.0))
    assert other.get_extra_state() == b.get_extra_state()


def test_pcgrad_projects_out_conflicting_components():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # dot = -1: conflict
    projected = project_conflicting(torch.stack([g1, g2]))
    # g1 - (g1.g2 / |g2|^2) g2 = [0.5, 0.5]; g2 - (g2.g1 / |g1|^2) g1 = [0, 1]
    torch.testing.assert_close(projected[0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(projected[1], torch.tensor([0.0, 1.0]))
    assert float(projected[0] @ g2) == pytest.approx(0.0)
    assert float(projected[1] @ g1) == pytest.approx(0.0)
    # no conflict: nothing changes
    agree = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(project_conflicting(agree), agree)


def test_pcgrad_sets_projected_shared_and_plain_head_gradients():
    shared = torch.nn.Parameter(torch.zeros(2))
    head_a = torch.nn.Parameter(torch.tensor([2.0]))
    head_b = torch.nn.Parameter(torch.tensor([3.0]))
    # L_a = shared . [1, 0] + head_a^2 / 2,  L_b = shared . [-1, 1] + head_b^2 / 2
    losses = {
        "classification": shared @ torch.tensor([1.0, 0.0]) + head_a.pow(2).sum() / 2,
        "segmentation": shared @ torch.tensor([-1.0, 1.0]) + head_b.pow(2).sum() / 2,
    }
    b = PCGrad(("classification", "segmentation"))
    b.backward(losses, [shared], {"classification": [head_a], "segmentation": [head_b]})
    torch.testing.assert_close(shared.grad, torch.tensor([0.5, 1.5]))  # [0.5,0.5] + [0,1]
    torch.testing.assert_close(head_a.grad, torch.tensor([2.0]))
    torch.testing.assert_close(head_b.grad, torch.tensor([3.0]))
    # plain summation would have given [0, 1]: the conflicting parts are gone
    assert not torch.allclose(shared.grad, torch.tensor([0.0, 1.0]))


def test_build_balancer_names():
    assert type(build_balancer("dwa", TASKS)) is DWA
    assert build_balancer("pcgrad", TASKS).gradient_based
    with pytest.raises(ValueError, match="unknown loss balancer 'gradnorm'"):
        build_balancer("gradnorm", TASKS)

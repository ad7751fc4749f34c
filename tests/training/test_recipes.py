"""The YOLOv8/YOLOX recipe formulas (darknetpy.training.recipes, recipe_init, model.recipe_options)
against values worked by hand from the references' formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from darknetpy.errors import CfgError
from darknetpy.model.cfg import Options, parse_cfg
from darknetpy.model.network import Network
from darknetpy.model.recipe_options import RECIPE_DEFAULTS, parse_recipe_options, recipe_name
from darknetpy.training import recipes as R
from darknetpy.training.recipe_init import (
    channel_origin,
    init_from_scratch,
    set_recipe_bn_momentum,
    v8_class_bias,
    yolox_prior_bias,
)


def _options(text: str) -> Options:
    return Options(parse_cfg(text, "t.cfg")[0])


def _recipe(text: str = "recipe=yolov8"):
    opts = _options("[net]\n" + text + "\n")
    return parse_recipe_options(opts, recipe_name(opts))


# ------------------------------------------------------------------ keys
def test_darknet_cfg_has_no_recipe() -> None:
    opts = _options("[net]\nbatch=16\n")
    assert recipe_name(opts) == "darknet"
    assert parse_recipe_options(opts, "darknet") is None


@pytest.mark.parametrize("recipe", ["yolov8", "yolox"])
def test_defaults_fill_every_key(recipe: str) -> None:
    r = _recipe(f"recipe={recipe}")
    table = RECIPE_DEFAULTS[recipe]
    for key, value in table.items():
        if hasattr(r, key):
            assert getattr(r, key) == value, key


def test_one_key_overrides_one_part() -> None:
    r = _recipe("recipe=yolov8\noptimizer=sgd\nclose_mosaic=0\nlr_schedule=cosine")
    assert (r.optimizer, r.close_mosaic, r.lr_schedule, r.warmup_epochs) == ("sgd", 0, "cosine", 3.0)


def test_bad_values_are_located_errors() -> None:
    with pytest.raises(CfgError, match=r"t.cfg:\d+ \[net\]: recipe='yolov9'.*did you mean 'yolov8'"):
        _recipe("recipe=yolov9")
    with pytest.raises(CfgError, match="ema_decay=1.5"):
        _recipe("recipe=yolox\nema_decay=1.5")
    with pytest.raises(CfgError, match="optimizer='adam'"):
        _recipe("recipe=yolox\noptimizer=adam")


# ------------------------------------------------------------------ epochs, accumulation, decay, auto
def test_epoch_mapping() -> None:
    assert R.epoch_iterations(160, 16) == 10
    assert R.epoch_iterations(161, 16) == 11
    assert R.resolve_length(40, 0, 10) == (40, 400)
    assert R.resolve_length(0, 400, 10) == (40, 400)
    assert R.resolve_length(0, 405, 10) == (41, 405)
    assert R.resolve_length(40, 100, 10) == (40, 100)  # the schedule of 40 epochs, stopped at 100


def test_accumulate_and_decay() -> None:
    assert R.accumulate_steps(64, 16, 400) == 4
    assert R.accumulate_steps(64, 24, 400) == 3  # round(2.67)
    assert R.accumulate_steps(80, 32, 400) == 2  # round(2.5): half to even, as Python's round
    assert R.accumulate_steps(64, 128, 400) == 1
    assert R.accumulate_steps(64, 16, 2) == 2  # capped at the run's iterations
    assert R.accumulate_steps(0, 16, 400) == 1
    assert R.scaled_decay(5e-4, 16, 4, 64) == pytest.approx(5e-4)
    assert R.scaled_decay(5e-4, 24, 3, 64) == pytest.approx(5.625e-4)
    assert R.scaled_decay(5e-4, 16, 1, 0) == 5e-4


def test_auto_optimizer() -> None:
    # raccoon: ceil(160 / 64) * 40 = 120 iterations -> AdamW, lr round(0.002 * 5 / 5, 6)
    assert R.auto_optimizer(160, 16, 64, 40, 1) == R.AutoChoice("adamw", 0.002, 0.9, 0.0)
    assert R.auto_optimizer(160, 16, 64, 40, 80).lr == 0.000119  # 0.002 * 5 / 84
    assert R.auto_optimizer(118287, 16, 64, 300, 80).name == "sgd"  # 1849 * 300 > 10000


# ------------------------------------------------------------------ learning rate
def test_lambda_factors() -> None:
    assert R.linear_lf(0, 40, 0.01) == 1.0
    assert R.linear_lf(20, 40, 0.01) == pytest.approx(0.505)
    assert R.linear_lf(39, 40, 0.01) == pytest.approx(0.03475)
    assert R.linear_lf(40, 40, 0.01) == pytest.approx(0.01)
    assert R.cosine_lf(0, 40, 0.01) == pytest.approx(1.0)
    assert R.cosine_lf(20, 40, 0.01) == pytest.approx(0.505)
    assert R.cosine_lf(40, 40, 0.01) == pytest.approx(0.01)


def test_yolox_warm_cos() -> None:
    f = lambda i: R.yolox_warm_cos_lr(0.0025, 0.05, 400, 50, 0.0, 150, i)
    assert f(0) == 0.0
    assert f(25) == pytest.approx(0.000625)  # quadratic: 0.0025 * (1/2)^2
    assert f(50) == pytest.approx(0.0025)
    assert f(150) == pytest.approx(0.0013125)  # half-way down the cosine
    assert f(250) == pytest.approx(0.000125) and f(399) == pytest.approx(0.000125)


def test_warmup_iterations() -> None:
    assert R.warmup_iterations(3, 40, 10) == 30
    assert R.warmup_iterations(3, 2, 10) == 10  # capped at epochs - 1
    assert R.warmup_iterations(3, 1, 10) == 0
    assert R.warmup_iterations(0.25, 40, 10) == 2  # round(2.5)


def test_v8_schedule_sgd() -> None:
    r = _recipe("recipe=yolov8\noptimizer=sgd")
    s = R.RecipeSchedule(r, 0.01, 0.937, 0.1, epoch_iters=10, epochs=40, accumulate=4)
    assert s.nw == 30
    a = s.at(0)
    assert a.lrs == (0.0, 0.0, pytest.approx(0.1)) and a.momentum == pytest.approx(0.8)
    assert a.accumulate == 1
    b = s.at(15)  # epoch 1: target 0.01 * ((1 - 1/40) * 0.99 + 0.01) = 0.0097525
    assert b.lrs == pytest.approx((0.00487625, 0.00487625, 0.05487625))
    assert b.momentum == pytest.approx(0.8685) and b.accumulate == 2  # round(2.5) -> 2
    c = s.at(30)
    assert c.lrs == pytest.approx((0.0092575,) * 3) and c.momentum == pytest.approx(0.937)
    assert c.accumulate == 4
    assert s.at(399).lrs == pytest.approx((0.0003475,) * 3)
    assert s.mosaic(299) and not s.mosaic(300)


def test_yolox_schedule() -> None:
    r = _recipe("recipe=yolox")
    s = R.RecipeSchedule(r, 0.0025, 0.9, 0.0, epoch_iters=10, epochs=40, accumulate=1)
    assert s.nw == 50
    assert s.at(25).lrs == pytest.approx((0.000625,) * 3)
    assert s.at(25).momentum == 0.9 and s.at(25).accumulate == 1
    assert s.mosaic(230) and not s.mosaic(240)  # close_mosaic 16: epochs 24.. (0-based) without


def test_apply_sets_groups() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = R.build_optimizer(R.param_groups(net), "sgd", 0.01, 0.937, 5e-4, True)
    R.RecipeSchedule.apply(None, opt, R.StepSettings((0.1, 0.2, 0.3), 0.85, 1))  # type: ignore[arg-type]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2, 0.3]
    assert all(g["momentum"] == 0.85 and g["nesterov"] for g in opt.param_groups)


# ------------------------------------------------------------------ groups, optimizer
def test_param_groups_and_decay() -> None:
    conv1, bn, conv2 = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
    g = R.param_groups(nn.Sequential(conv1, bn, conv2))
    assert [id(p) for p in g.weights] == [id(conv1.weight), id(conv2.weight)]
    assert [id(p) for p in g.norms] == [id(bn.weight)]
    assert {id(p) for p in g.biases} == {id(bn.bias), id(conv2.bias)}
    opt = R.build_optimizer(g, "adamw", 0.002, 0.9, 5e-4, True)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_adamw_decay_is_decoupled_on_weights_only() -> None:
    w, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = R.build_optimizer(R.ParamGroups([w], [], [b]), "adamw", 0.1, 0.9, 0.5, True)
    w.grad, b.grad = torch.zeros(2), torch.zeros(2)
    opt.step()
    assert w.detach().tolist() == pytest.approx([0.95, 0.95])  # w * (1 - lr * decay), zero gradient
    assert b.detach().tolist() == [1.0, 1.0]


# ------------------------------------------------------------------ EMA
def test_ema_ramp_and_update() -> None:
    assert R.ema_decay(0.9999, 2000, 1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert R.ema_decay(0.9998, 2000, 2000) == pytest.approx(0.9998 * (1 - math.exp(-1)))
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    ema = R.RecipeEMA(net, 0.9999, 2000)
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[1].running_var.fill_(3.0)
    start_w = ema.shadow[0].clone()
    d = ema.update()
    assert d == pytest.approx(R.ema_decay(0.9999, 2000, 1))
    assert ema.shadow[0] == pytest.approx(d * start_w + (1 - d) * 2.0)
    var = ema.shadow[next(i for i, t in enumerate(ema.tensors) if t is net[1].running_var or
                      t.data_ptr() == net[1].running_var.data_ptr())]  # fmt: skip
    assert float(var) == pytest.approx(d * 1.0 + (1 - d) * 3.0)  # BN buffers are averaged too
    with ema.swapped():
        assert float(net[0].weight.detach()) == pytest.approx(float(ema.shadow[0]))
    assert float(net[0].weight.detach()) == 2.0
    state = ema.state_dict()
    other = R.RecipeEMA(net, 0.9999, 2000)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.shadow[0], ema.shadow[0])


# ------------------------------------------------------------------ init
def test_bias_priors() -> None:
    assert v8_class_bias(1, 8) == pytest.approx(math.log(5 / 6400))
    assert v8_class_bias(80, 32) == pytest.approx(math.log(5 / 80 / 400))
    assert yolox_prior_bias() == pytest.approx(-math.log(99))


CFG = """[net]
width=32
height=32
channels=3
recipe=yolov8
[convolutional]
filters=4
size=3
stride=2
pad=1
batch_normalize=1
activation=swish
[convolutional]
filters=3
size=1
activation=linear
[route]
layers=-2
[convolutional]
filters=2
size=1
activation=linear
[route]
layers=-3,-1
"""


def test_channel_origin_and_torch_init(tmp_path: Path) -> None:
    path = tmp_path / "t.cfg"
    path.write_text(CFG)
    net = Network.from_cfg(path)
    assert channel_origin(net, 4, 1) == (net.layers[1], 1)
    assert channel_origin(net, 4, 4) == (net.layers[3], 1)
    assert channel_origin(net, 0, 2) == (net.layers[0], 2)
    r = _recipe()
    init_from_scratch(net, r)
    set_recipe_bn_momentum(net, r.bn_momentum)
    bn = net.layers[0].bn
    assert float(bn.running_var.min()) == 1.0 and bn.momentum == 0.03
    bound = 1 / math.sqrt(3 * 3 * 3)  # kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    assert float(net.layers[0].conv.weight.detach().abs().max()) <= bound


def test_augment_keys_and_darknet_key_warning() -> None:
    r = _recipe("recipe=yolov8\nmosaic_prob=0.5\nscale_range=0.6,1.4\nhsv_gains=0.01,0.5,0.3")
    assert dict(r.augment) == {"mosaic_prob": 0.5, "scale_range": (0.6, 1.4),
                               "hsv_gains": (0.01, 0.5, 0.3)}  # fmt: skip
    assert _recipe().augment == ()
    with pytest.raises(CfgError, match="scale_range= takes 2 numbers"):
        _recipe("recipe=yolov8\nscale_range=0.5")
    with pytest.warns(UserWarning, match=r"mosaic= has no effect under recipe=yolox; use mosaic_prob"):
        _recipe("recipe=yolox\nmosaic=1")


def test_plan_raccoon_runs() -> None:
    from darknetpy.model.netconfig import NetConfig
    from darknetpy.training.recipe_loop import plan_recipe

    v8 = NetConfig(batch=16, width=224, height=224, channels=3, learning_rate=0.01, momentum=0.937,
                   decay=0.0005)  # fmt: skip
    p = plan_recipe(v8, _recipe("recipe=yolov8\nepochs=40"), train_images=160, classes=1)
    assert (p.epochs, p.epoch_iters, p.max_batches, p.accumulate) == (40, 10, 400, 4)
    assert (p.optimizer, p.lr0, p.momentum, p.warmup_bias_lr) == ("adamw", 0.002, 0.9, 0.0)
    assert p.decay == pytest.approx(5e-4) and p.close_mosaic_iteration == 301
    yx = NetConfig(batch=16, width=224, height=224, channels=3, learning_rate=0.01, momentum=0.9,
                   decay=0.0005)  # fmt: skip
    p = plan_recipe(yx, _recipe("recipe=yolox\nepochs=40"), train_images=160, classes=1)
    assert (p.optimizer, p.lr0, p.momentum, p.accumulate) == ("sgd", 0.0025, 0.9, 1)
    assert p.decay == 5e-4 and p.close_mosaic_iteration == 241  # epochs 24.. without mosaic
    p = plan_recipe(yx, _recipe("recipe=yolox\nepochs=40"), 160, 1, max_batches=20)
    assert (p.epochs, p.max_batches) == (40, 20)  # the 40-epoch schedule, stopped at 20


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cfg, expected", [
    ("yolov8n-raccoon.cfg", {0: 2.0, 64: math.log(5 / 6400)}),  # stride 8: (640/8)^2 = 6400
    ("yolox-tiny-raccoon.cfg", {4: -math.log(99), 5: -math.log(99)}),  # objectness, class
])  # fmt: skip
def test_head_bias_prior_on_the_raccoon_cfgs(cfg: str, expected: dict[int, float]) -> None:
    net = Network.from_cfg(REPO / "cfg" / cfg)
    init_from_scratch(net, net.net.recipe)
    level = net.heads and net.layers[net.heads[0]].sources[0]
    for channel, value in expected.items():
        conv, c = channel_origin(net, level, channel)
        assert float(conv.conv.bias[c].detach()) == pytest.approx(value)

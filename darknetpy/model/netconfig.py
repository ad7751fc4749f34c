"""The ``[net]`` section's MEANING: :class:`NetConfig` (darknet's ``parser.c: parse_net_options``).

No torch here. Every key darknet reads in ``parse_net_options`` is either a field of
:class:`NetConfig` or declared as knowingly ignored, so a typo in ``[net]`` is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from ..errors import CfgError
from .cfg import Options, Section
from .recipe_options import RecipeOptions, parse_recipe_options, recipe_default, recipe_name


class Policy(Enum):
    """Learning-rate policies of darknet's ``get_policy`` (``parser.c``)."""

    CONSTANT = "constant"
    STEP = "step"
    STEPS = "steps"
    EXP = "exp"
    POLY = "poly"
    RANDOM = "random"
    SIGMOID = "sigmoid"
    SGDR = "sgdr"


POLICIES = MappingProxyType({p.value: p for p in Policy})

# [net] keys darknet reads that darknetpy accepts without giving them an effect (tracking, contrastive,
# GPU memory tuning, adversarial training). They are declared so they are not reported as unused.
IGNORED_NET_KEYS = (
    "track", "augment_speed", "sequential_subdivisions", "try_fix_nan", "contrastive",
    "contrastive_jit_flip", "contrastive_color", "unsupervised", "optimized_memory",
    "workspace_size_limit_MB", "use_cuda_graph", "adversarial_lr", "attention", "max_crop",
    "min_crop", "show_receptive_field", "weights_reject_freq", "equidistant_point",
    "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "random",
    "init_sequential_subdivisions", "batch_normalize", "center", "letter_box_resize",
    "angle", "aspect", "seq_scales", "onlyforward", "resize_step_stride",
)


@dataclass(frozen=True)
class NetConfig:
    """The ``[net]`` section: input size, optimisation and augmentation settings.

    ``batch`` is always the cfg's batch (images per optimizer step, over all subdivisions); the
    mini-batch darknet calls ``net.batch`` after parsing is :attr:`mini_batch`.
    """

    batch: int = 1
    subdivisions: int = 1
    width: int = 0
    height: int = 0
    channels: int = 0
    time_steps: int = 1
    # `inputs=`: the input size of a network without width/height/channels (Darknet's char-RNN
    # cfgs: `inputs=256`); such a network's input is 1x1 with `inputs` channels
    inputs: int = 0
    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0001
    max_batches: int = 0
    policy: Policy = Policy.CONSTANT
    burn_in: int = 0
    power: float = 4.0
    step: int = 1
    scale: float = 1.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    gamma: float = 1.0
    learning_rate_min: float = 0.00001
    sgdr_cycle: int = 0
    sgdr_mult: int = 2
    adam: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 0.000001
    # augmentation (darknet's load_data_detection arguments)
    flip: bool = True
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0
    cutmix: bool = False
    mosaic: bool = False
    letter_box: bool = False
    mosaic_bound: bool = False
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    resize_step: int = 32
    dynamic_minibatch: bool = False
    # training extras
    ema_alpha: float = 0.0
    loss_scale: float = 1.0
    label_smooth_eps: float = 0.0
    max_chart_loss: float = 20.0
    # the YOLOv8/YOLOX training recipe (`recipe=`); None: Darknet's training (model/recipe_options.py)
    recipe: RecipeOptions | None = None

    @property
    def mini_batch(self) -> int:
        """Images per forward pass: ``batch / subdivisions`` (darknet's ``net.batch`` after parsing)."""
        return max(1, self.batch // self.subdivisions) * self.time_steps

    @property
    def mixup_code(self) -> int:
        """Darknet's internal mixup mode: 4 mosaic+cutmix, 2 cutmix, 3 mosaic, else ``mixup``."""
        if self.mosaic and self.cutmix:
            return 4
        if self.cutmix:
            return 2
        if self.mosaic:
            return 3
        return self.mixup

    @classmethod
    def from_section(cls, section: Section) -> NetConfig:
        """Parse ``[net]`` as darknet's ``parse_net_options`` does, then validate it."""
        return parse_net_options(Options(section))


def parse_net_options(opts: Options) -> NetConfig:
    """Typed ``[net]`` (``parser.c: parse_net_options``); leaves unused keys for the caller to report."""
    recipe = recipe_name(opts)
    batch = opts.get_int("batch", 1)
    subdivisions = opts.get_int("subdivisions", 1)
    max_batches = opts.get_int("max_batches", 0)
    policy = opts.get_choice("policy", POLICIES, "constant")
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    if policy in (Policy.STEPS, Policy.SGDR):
        steps = opts.get_ints("steps", () if policy is Policy.SGDR else None)
        scales = opts.get_floats("scales", () if policy is Policy.SGDR else None)
        if policy is Policy.SGDR and not opts.has("scales"):
            scales = (1.0,) * len(steps)  # parse_net_options: each scale starts at 1.0
        if len(steps) != len(scales):
            raise opts.error(
                f"steps= has {len(steps)} values but scales= has {len(scales)}; "
                "darknet needs one scale per step",
                "scales",
            )
    else:
        opts.ignore("steps", "scales")
    cfg = NetConfig(
        batch=batch,
        subdivisions=subdivisions,
        width=opts.get_int("width", 0),
        height=opts.get_int("height", 0),
        channels=opts.get_int("channels", 0),
        time_steps=opts.get_int("time_steps", 1),
        inputs=opts.get_int("inputs", 0),
        learning_rate=opts.get_float("learning_rate", recipe_default(recipe, "learning_rate", 0.001)),
        momentum=opts.get_float("momentum", recipe_default(recipe, "momentum", 0.9)),
        decay=opts.get_float("decay", recipe_default(recipe, "decay", 0.0001)),
        max_batches=max_batches,
        policy=policy,
        burn_in=opts.get_int("burn_in", 0),
        power=opts.get_float("power", 4.0),
        step=opts.get_int("step", 1),
        scale=opts.get_float("scale", 1.0),
        steps=steps,
        scales=scales,
        gamma=opts.get_float("gamma", 1.0),
        learning_rate_min=opts.get_float("learning_rate_min", 0.00001),
        sgdr_cycle=opts.get_int("sgdr_cycle", max_batches),
        sgdr_mult=opts.get_int("sgdr_mult", 2),
        adam=opts.get_bool("adam", False),
        b1=opts.get_float("B1", 0.9),
        b2=opts.get_float("B2", 0.999),
        eps=opts.get_float("eps", 0.000001),
        flip=opts.get_bool("flip", True),
        blur=opts.get_int("blur", 0),
        gaussian_noise=opts.get_int("gaussian_noise", 0),
        mixup=opts.get_int("mixup", 0),
        cutmix=opts.get_bool("cutmix", False),
        mosaic=opts.get_bool("mosaic", False),
        letter_box=opts.get_bool("letter_box", False),
        mosaic_bound=opts.get_bool("mosaic_bound", False),
        hue=opts.get_float("hue", 0.0),
        saturation=opts.get_float("saturation", 1.0),
        exposure=opts.get_float("exposure", 1.0),
        resize_step=opts.get_int("resize_step", 32),
        dynamic_minibatch=opts.get_bool("dynamic_minibatch", False),
        ema_alpha=opts.get_float("ema_alpha", 0.0),
        loss_scale=opts.get_float("loss_scale", 1.0),
        label_smooth_eps=opts.get_float("label_smooth_eps", 0.0),
        max_chart_loss=opts.get_float("max_chart_loss", 20.0),
        recipe=parse_recipe_options(opts, recipe),
    )
    opts.ignore(*IGNORED_NET_KEYS)
    if cfg.batch < 1 or cfg.subdivisions < 1:
        raise opts.error(f"batch={cfg.batch} subdivisions={cfg.subdivisions}: both must be >= 1", "batch")
    if cfg.subdivisions > cfg.batch:
        raise opts.error(
            f"subdivisions={cfg.subdivisions} is larger than batch={cfg.batch}; "
            "the mini-batch batch/subdivisions would be 0",
            "subdivisions",
        )
    for key in ("width", "height", "channels", "time_steps"):
        if getattr(cfg, key) < 0 or (key == "time_steps" and cfg.time_steps < 1):
            raise opts.error(f"{key}={getattr(cfg, key)} must be a positive integer", key)
    if cfg.width * cfg.height * cfg.channels == 0 and cfg.inputs <= 0:
        raise CfgError(
            f"{opts.where()}: width={cfg.width} height={cfg.height} channels={cfg.channels}: "
            "the network input size is missing (darknet: 'No input parameters supplied')"
        )
    return cfg

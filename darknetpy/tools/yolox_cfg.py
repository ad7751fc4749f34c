"""YOLOX (Megvii-BaseDetection/YOLOX) written in Darknet's cfg language.

Each YOLOX module becomes Darknet sections (``yolox/models/network_blocks.py``, ``darknet.py``,
``yolo_pafpn.py``, ``yolo_head.py``):

* ``BaseConv`` (conv without bias, BN, SiLU): ``[convolutional] batch_normalize=1
  bn_eps=0.001 activation=swish pad=1`` (YOLOX's exps set eps 1e-3 in ``init_yolo``; the eps is not
  in the state dict) (``pad=1`` is ``size/2``, YOLOX's ``(k-1)//2`` for odd k);
* ``DWConv``: a depthwise ``[convolutional] groups=C`` then the pointwise 1x1;
* ``Bottleneck``: 1x1, 3x3 and (with its shortcut) ``[shortcut] from=`` the bottleneck input;
* ``CSPLayer``: conv1, the bottlenecks, ``[route]`` back to the input, conv2, ``[route]`` of both
  branches (YOLOX's ``cat((m(conv1(x)), conv2(x)))``), conv3;
* ``SPPBottleneck``: conv1, three ``[maxpool] stride=1`` of sizes 5, 9, 13 each reading conv1
  (Darknet's default ``padding=size-1`` centres odd windows: ``nn.MaxPool2d(k, 1, k // 2)``),
  ``[route]`` conv1, 5, 9, 13, conv2;
* ``Focus``: ``[reorg3d] stride=2`` then the conv. reorg3d puts pixel block (dy, dx) at channel
  block ``2·dy + dx``, Focus at ``dy + 2·dx``: a channel permutation, which the importer folds into
  the conv's input channels (:func:`darknetpy.tools.import_yolox.fold_focus_stem`);
* upsampling ``[upsample] stride=2``, concatenation ``[route]``;
* the decoupled head, per level: the 1x1 stem, the class branch (two 3x3, 1x1 ``cls_pred`` with
  bias), ``[route]`` back to the stem, the box branch (two 3x3), 1x1 ``reg_pred`` (4) and,
  ``[route]`` back to the box branch, 1x1 ``obj_pred`` (1), then ``[route]`` reg, obj, cls: the
  (N, 5 + classes, H, W) map one ``[yolox]`` section reads per level.

:func:`yolox_layout` returns the cfg text and, for every ``[convolutional]``, where its tensors
are in a YOLOX state dict (:class:`ConvSource`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import UsageError

__all__ = [
    "ACTIVATIONS", "CFG_FILES", "YOLOX_SIZES", "ConvSource", "YoloxLayout", "YoloxSize",
    "standard_cfg", "write_cfg_files", "yolox_layout",
]

# YOLOX's `act` names -> Darknet's activation names (network_blocks.py: get_activation).
ACTIVATIONS: Mapping[str, str] = MappingProxyType(
    {"silu": "swish", "relu": "relu", "lrelu": "leaky"}
)
BN_EPS = 0.001  # yolox_base.py: init_yolo sets every BatchNorm2d's eps to 1e-3
DARKNET_BN_EPS = 1e-5  # darknet's own (blas.c: normalize_cpu): no bn_eps key needed
NEAR = 16  # [route]/[shortcut] references closer than this are written relative (-k)


@dataclass(frozen=True)
class YoloxSize:
    """One of YOLOX's standard models (``exps/default/yolox_*.py``)."""

    depth: float
    width: float
    depthwise: bool
    size: int  # the exp's input_size / test_size


YOLOX_SIZES: Mapping[str, YoloxSize] = MappingProxyType({
    "nano": YoloxSize(0.33, 0.25, True, 416),
    "tiny": YoloxSize(0.33, 0.375, False, 416),
    "s": YoloxSize(0.33, 0.50, False, 640),
    "m": YoloxSize(0.67, 0.75, False, 640),
    "l": YoloxSize(1.0, 1.0, False, 640),
    "x": YoloxSize(1.33, 1.25, False, 640),
})


@dataclass(frozen=True)
class ConvSource:
    """Where one ``[convolutional]``'s tensors are in a YOLOX state dict.

    ``prefix`` names a ``BaseConv`` (``prefix.conv.weight``, ``prefix.bn.*``) when
    ``batch_normalize``, else a plain biased ``nn.Conv2d`` (``prefix.weight``, ``prefix.bias``).
    """

    prefix: str
    filters: int
    in_channels: int
    size: int
    groups: int
    batch_normalize: bool

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The YOLOX state-dict keys of this conv and their shapes."""
        weight = (self.filters, self.in_channels // self.groups, self.size, self.size)
        if not self.batch_normalize:
            return {f"{self.prefix}.weight": weight, f"{self.prefix}.bias": (self.filters,)}
        keys = {f"{self.prefix}.conv.weight": weight}
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{self.prefix}.bn.{name}"] = (self.filters,)
        return keys


@dataclass(frozen=True)
class YoloxLayout:
    """A YOLOX network as Darknet sections.

    Attributes:
        cfg_text: the cfg.
        convs: (darknet layer index, source) for every ``[convolutional]``, in layer order.
        stem: the layer index of the Focus conv (the one after ``[reorg3d]``).
        outputs: the three per-level (N, 5 + classes, H, W) ``[route]`` layers, strides 8, 16, 32.
        fpn: the three PAFPN outputs (``pan_out2``, ``pan_out1``, ``pan_out0``).
    """

    cfg_text: str
    convs: tuple[tuple[int, ConvSource], ...]
    stem: int
    outputs: tuple[int, int, int]
    fpn: tuple[int, int, int]


class _Writer:
    """Appends sections, counting Darknet layers (``[net]`` not counted)."""

    def __init__(self, activation: str, depthwise: bool, bn_eps: float) -> None:
        self.lines: list[str] = []
        self.bn: dict[str, object] = {"batch_normalize": 1}
        if bn_eps != DARKNET_BN_EPS:
            self.bn["bn_eps"] = f"{bn_eps:g}"
        self.count = 0
        self.activation = activation
        self.depthwise = depthwise
        self.convs: list[tuple[int, ConvSource]] = []

    def comment(self, text: str) -> None:
        self.lines += ["", f"# {text}"]

    def section(self, name: str, **keys: object) -> int:
        if self.lines and self.lines[-1].startswith("#"):
            self.lines.append(f"[{name}]")
        else:
            self.lines += ["", f"[{name}]"]
        self.lines += [f"{key}={value}" for key, value in keys.items()]
        self.count += 1
        return self.count - 1

    def ref(self, index: int) -> str:
        """A reference to layer ``index`` from the next layer: relative when near."""
        distance = self.count - index
        return str(-distance) if distance < NEAR else str(index)

    def refs(self, *indices: int) -> str:
        return ",".join(self.ref(i) for i in indices)

    def route(self, *indices: int) -> int:
        return self.section("route", layers=self.refs(*indices))

    def from_(self, index: int) -> int:
        """Make ``index`` the input of the next layer (a ``[route]`` unless it already is)."""
        return index if index == self.count - 1 else self.route(index)

    def base_conv(self, prefix: str, cin: int, cout: int, size: int, stride: int = 1,
                  groups: int = 1) -> int:
        """YOLOX's ``BaseConv``."""
        keys: dict[str, object] = {**self.bn, "filters": cout, "size": size, "stride": stride,
                                   "pad": 1}
        if groups > 1:
            keys["groups"] = groups
        index = self.section("convolutional", **keys, activation=self.activation)
        self.convs.append((index, ConvSource(prefix, cout, cin, size, groups, True)))
        return index

    def conv(self, prefix: str, cin: int, cout: int, size: int, stride: int = 1) -> int:
        """``DWConv`` when the network is depthwise, else ``BaseConv`` (YOLOX's ``Conv``)."""
        if not self.depthwise:
            return self.base_conv(prefix, cin, cout, size, stride)
        self.base_conv(f"{prefix}.dconv", cin, cin, size, stride, groups=cin)
        return self.base_conv(f"{prefix}.pconv", cin, cout, 1)

    def pred(self, prefix: str, cin: int, cout: int) -> int:
        """A head prediction: 1x1 ``nn.Conv2d`` with bias, no activation."""
        index = self.section("convolutional", filters=cout, size=1, stride=1, pad=1,
                             activation="linear")
        self.convs.append((index, ConvSource(prefix, cout, cin, 1, 1, False)))
        return index

    def csp(self, prefix: str, cin: int, cout: int, n: int, shortcut: bool) -> int:
        """YOLOX's ``CSPLayer`` (expansion 0.5) reading the previous layer."""
        hidden = int(cout * 0.5)
        source = self.count - 1
        self.base_conv(f"{prefix}.conv1", cin, hidden, 1)
        for i in range(n):  # Bottleneck(hidden, hidden, shortcut, expansion=1.0)
            start = self.count - 1
            self.base_conv(f"{prefix}.m.{i}.conv1", hidden, hidden, 1)
            self.conv(f"{prefix}.m.{i}.conv2", hidden, hidden, 3)
            if shortcut:
                self.section("shortcut", **{"from": self.ref(start)}, activation="linear")
        branch = self.count - 1
        self.route(source)
        conv2 = self.base_conv(f"{prefix}.conv2", cin, hidden, 1)
        self.route(branch, conv2)
        return self.base_conv(f"{prefix}.conv3", 2 * hidden, cout, 1)

    def spp(self, prefix: str, cin: int, cout: int) -> int:
        """YOLOX's ``SPPBottleneck`` (max pools 5, 9, 13)."""
        hidden = cin // 2
        conv1 = self.base_conv(f"{prefix}.conv1", cin, hidden, 1)
        pools = []
        for size in (5, 9, 13):
            self.from_(conv1)
            pools.append(self.section("maxpool", size=size, stride=1))
        self.route(conv1, *pools)
        return self.base_conv(f"{prefix}.conv2", hidden * 4, cout, 1)


def _channels(width: float) -> tuple[int, tuple[int, int, int]]:
    """``CSPDarknet``'s base channels and the PAFPN's ``int(in_channels[i] * width)``.

    Raises:
        UsageError: a width for which YOLOX's own backbone and PAFPN disagree (YOLOX fails too).
    """
    base = int(width * 64)
    levels = (int(256 * width), int(512 * width), int(1024 * width))
    if levels != (4 * base, 8 * base, 16 * base) or base < 1:
        raise UsageError(f"width {width}: YOLOX's backbone gives {4 * base}, {8 * base}, "
                         f"{16 * base} channels but its PAFPN expects {levels[0]}, {levels[1]}, "
                         f"{levels[2]}; choose a width for which 64 x width is a whole number")
    return base, levels


def yolox_layout(depth: float, width: float, classes: int, depthwise: bool = False,
                 act: str = "silu", *, size: int = 640, net: Mapping[str, object] | None = None,
                 with_head: bool = True, title: str | None = None,
                 notes: Sequence[str] = (), bn_eps: float = BN_EPS, batch: int = 64) -> YoloxLayout:
    """YOLOX(``depth``, ``width``, ``classes``) as Darknet sections.

    Args:
        depth, width: YOLOX's ``depth`` / ``width`` multipliers (:data:`YOLOX_SIZES`).
        classes: the class count.
        depthwise: ``DWConv`` in the backbone, PAFPN and head (YOLOX-nano).
        act: YOLOX's activation name (:data:`ACTIVATIONS`).
        size: the network input (width = height).
        net: extra ``[net]`` keys (training recipe), written after batch/size/channels.
        with_head: end with the ``[yolox]`` section (off: the network ends at the last level's map).
        title: the first comment line.
        notes: further comment lines before ``[net]``.
        bn_eps: the batch norms' eps (YOLOX's exps set 1e-3; Darknet's 1e-5 writes no key).
        batch: the ``[net]`` batch.

    Raises:
        UsageError: an unknown activation, a class count below 1, a size not a multiple of 32, or
            a width YOLOX cannot build.
    """
    if act not in ACTIVATIONS:
        raise UsageError(f"act={act!r} is not one of {', '.join(ACTIVATIONS)} "
                         "(YOLOX's get_activation)")
    if classes < 1:
        raise UsageError(f"classes={classes}: need at least 1")
    if size < 32 or size % 32:
        raise UsageError(f"size={size}: YOLOX's input must be a multiple of 32 (strides 8, 16, 32)")
    base, (c3, c4, c5) = _channels(width)
    base_depth = max(round(depth * 3), 1)  # CSPDarknet
    fpn_depth = round(3 * depth)  # YOLOPAFPN
    w = _Writer(ACTIVATIONS[act], depthwise, bn_eps)
    w.lines.append(f"# {title or 'YOLOX'}: depth {depth}, width {width}, {classes} "
                   f"class{'' if classes == 1 else 'es'}"
                   f"{', depthwise' if depthwise else ''}, activation {act}")
    w.lines.append("# written by darknetpy.tools.yolox_cfg: YOLOX in Darknet sections (import "
                   "YOLOX's weights")
    w.lines.append("# with `darknetpy import-yolox`)")
    w.lines += [f"# {line}".rstrip() for line in notes]
    w.lines += ["", "[net]", f"batch={batch}", "subdivisions=1", f"width={size}", f"height={size}",
                "channels=3"]
    w.lines += [f"{key}={value}" for key, value in (net or {}).items()]

    bb = "backbone.backbone"
    w.comment("stem: Focus = space-to-depth + conv (backbone.backbone.stem)")
    w.section("reorg3d", stride=2)
    w.base_conv(f"{bb}.stem.conv", 12, base, 3)
    stages: dict[str, int] = {}
    cin = base
    for k, name in enumerate(("dark2", "dark3", "dark4", "dark5")):
        cout = base * 2 ** (k + 1)
        w.comment(f"{name} ({bb}.{name})")
        w.conv(f"{bb}.{name}.0", cin, cout, 3, 2)
        if name == "dark5":
            w.spp(f"{bb}.{name}.1", cout, cout)
            stages[name] = w.csp(f"{bb}.{name}.2", cout, cout, base_depth, shortcut=False)
        else:
            n = base_depth if name == "dark2" else 3 * base_depth
            stages[name] = w.csp(f"{bb}.{name}.1", cout, cout, n, shortcut=True)
        cin = cout

    w.comment("PAFPN (backbone.*)")
    fpn_out0 = w.base_conv("backbone.lateral_conv0", c5, c4, 1)
    w.section("upsample", stride=2)
    w.route(w.count - 1, stages["dark4"])
    w.csp("backbone.C3_p4", 2 * c4, c4, fpn_depth, shortcut=False)
    fpn_out1 = w.base_conv("backbone.reduce_conv1", c4, c3, 1)
    w.section("upsample", stride=2)
    w.route(w.count - 1, stages["dark3"])
    pan_out2 = w.csp("backbone.C3_p3", 2 * c3, c3, fpn_depth, shortcut=False)
    w.conv("backbone.bu_conv2", c3, c3, 3, 2)
    w.route(w.count - 1, fpn_out1)
    pan_out1 = w.csp("backbone.C3_n3", 2 * c3, c4, fpn_depth, shortcut=False)
    w.conv("backbone.bu_conv1", c4, c4, 3, 2)
    w.route(w.count - 1, fpn_out0)
    pan_out0 = w.csp("backbone.C3_n4", 2 * c4, c5, fpn_depth, shortcut=False)

    hidden = int(256 * width)
    outputs = []
    for k, (source, channels) in enumerate(zip((pan_out2, pan_out1, pan_out0), (c3, c4, c5))):
        w.comment(f"head, stride {8 * 2 ** k}: stem, class branch, box branch; "
                  f"[route] box (4), objectness (1), classes ({classes})")
        w.from_(source)
        stem = w.base_conv(f"head.stems.{k}", channels, hidden, 1)
        w.conv(f"head.cls_convs.{k}.0", hidden, hidden, 3)
        w.conv(f"head.cls_convs.{k}.1", hidden, hidden, 3)
        cls = w.pred(f"head.cls_preds.{k}", hidden, classes)
        w.route(stem)
        w.conv(f"head.reg_convs.{k}.0", hidden, hidden, 3)
        reg_feat = w.conv(f"head.reg_convs.{k}.1", hidden, hidden, 3)
        reg = w.pred(f"head.reg_preds.{k}", hidden, 4)
        w.route(reg_feat)
        obj = w.pred(f"head.obj_preds.{k}", hidden, 1)
        outputs.append(w.route(reg, obj, cls))
    if with_head:
        w.comment("YOLOX's decoupled anchor-free head: decode, SimOTA loss, NMS")
        w.section("yolox", layers=",".join(str(i) for i in outputs), classes=classes)
    return YoloxLayout(
        cfg_text="\n".join(w.lines) + "\n",
        convs=tuple(w.convs),
        stem=w.convs[0][0],
        outputs=(outputs[0], outputs[1], outputs[2]),
        fpn=(pan_out2, pan_out1, pan_out0),
    )


RECIPE_NOTES = (
    "",
    "recipe=yolox trains the YOLOX way (yolox/exp/yolox_base.py): SGD momentum 0.9 nesterov,",
    "lr 0.01 per 64 images, weight decay 5e-4 on weights only, 5 warm-up epochs (quadratic),",
    "cosine to 0.05x, the last 15 epochs without mosaic/mixup and with the L1 box loss, EMA",
    "0.9998, batch-norm momentum 0.03; every part is a [net] key (README, \"Training recipes\").",
    "An epoch is ceil(train images / batch) iterations.",
)


# [net] keys of exps/default/yolox_{nano,tiny}.py that differ from yolox_base.py (mosaic_scale,
# enable_mixup, mosaic_prob); their random_size (10, 20) multi-scale training is not reproduced.
EXP_NET: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "nano": MappingProxyType({"mosaic_prob": 0.5, "mixup_prob": 0, "scale_range": "0.5,1.5"}),
    "tiny": MappingProxyType({"mixup_prob": 0, "scale_range": "0.5,1.5"}),
})


def _exp_note(name: str) -> tuple[str, ...]:
    if name not in EXP_NET:
        return ()
    keys = " ".join(f"{k}={v}" for k, v in EXP_NET[name].items())
    return (f"From exps/default/yolox_{name}.py: {keys}.",)


def standard_cfg(name: str, *, classes: int = 80, size: int | None = None, batch: int = 64,
                 epochs: int = 300, title: str | None = None, notes: Sequence[str] = (),
                 net: Mapping[str, object] | None = None) -> str:
    """The cfg of YOLOX-``name`` (:data:`YOLOX_SIZES`) with the YOLOX training recipe and the exp's
    own augmentation settings (:data:`EXP_NET`), as ``cfg/yolox-<name>.cfg`` holds it (COCO: 80
    classes, the exp's input size, 300 epochs); ``letter_box=1``: evaluation keeps the aspect ratio,
    as YOLOX's ValTransform does."""
    spec = YOLOX_SIZES[name]
    keys: dict[str, object] = {"letter_box": 1, "recipe": "yolox", "epochs": epochs,
                               **EXP_NET.get(name, {}), **(net or {})}
    layout = yolox_layout(spec.depth, spec.width, classes, spec.depthwise, size=size or spec.size,
                          net=keys, title=title or f"YOLOX-{name}",
                          notes=(*notes, *RECIPE_NOTES, *_exp_note(name)),
                          batch=batch)
    return layout.cfg_text


# The cfg files of the repository's cfg/ folder: file name -> standard_cfg's arguments.
CFG_FILES: Mapping[str, Mapping[str, object]] = MappingProxyType({
    **{f"yolox-{name}.cfg": MappingProxyType({"name": name}) for name in YOLOX_SIZES},
    "yolox-tiny-raccoon.cfg": MappingProxyType({
        "name": "tiny", "classes": 1, "size": 224, "batch": 16, "epochs": 40,
        "title": "YOLOX-tiny for the embedded raccoon dataset (data/raccoon)",
        "notes": ("trained from scratch on CPU: darknetpy train cfg/yolox-tiny-raccoon.cfg "
                  "data/raccoon/raccoon.data --map",
                  "224x224, batch 16: 160 images are 10 iterations an epoch, 40 epochs 400 "
                  "iterations (as yolov8n-raccoon.cfg)."),
    }),
})


def write_cfg_files(folder: str | Path) -> list[Path]:
    """Write every cfg of :data:`CFG_FILES` into ``folder`` (the repository's ``cfg/``)."""
    paths = []
    for file_name, kwargs in CFG_FILES.items():
        path = Path(folder) / file_name
        path.write_text(standard_cfg(**kwargs))  # type: ignore[arg-type]
        paths.append(path)
    return paths

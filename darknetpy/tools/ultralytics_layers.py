"""Ultralytics' v8 modules written as Darknet sections (one function per module).

Each function reproduces the module's structure in ``ultralytics/nn/modules`` (8.4.190) with
Darknet's own sections, so that the cfg builds the same computation:

===========  ==================================================================================
ultralytics  Darknet sections
===========  ==================================================================================
Conv         ``[convolutional] batch_normalize=1 bn_eps=0.001 activation=swish pad=1`` (autopad:
             k // 2)
C2f          conv 1x1 to 2c; ``[route] groups=2 group_id=1`` (the second half of
             ``chunk(2, 1)``); per Bottleneck conv 3x3, conv 3x3 and (shortcut) ``[shortcut]
             activation=linear``; ``[route]`` of the 1x1 conv (both halves, in order) and every
             Bottleneck output; conv 1x1
SPPF         conv 1x1 to c1 // 2; ``[maxpool] size=k stride=1`` chained n times (Darknet pads
             k - 1 split evenly with -FLT_MAX: ``nn.MaxPool2d(k, 1, k // 2)`` for odd k);
             ``[route]``; conv 1x1
nn.Upsample  ``[upsample] stride=s`` (nearest)
Concat       ``[route] layers=...``
Detect       per level: box branch conv 3x3, conv 3x3, ``[convolutional]`` 1x1 to 4 x reg_max
             with a bias; class branch conv 3x3, conv 3x3, 1x1 to nc with a bias (the
             ``legacy`` head of v3/v5/v8/v9); ``[route]`` box logits then class logits; then one
             ``[yolov8]`` section reading the levels
===========  ==================================================================================

Every convolution records the state-dict prefix its weights come from (:class:`WeightSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# ultralytics/utils/torch_utils.py: initialize_weights sets every BatchNorm2d's eps to 1e-3
BN_EPS_ULTRALYTICS = 0.001


@dataclass(frozen=True)
class WeightSource:
    """Where one ``[convolutional]`` layer's tensors are in the ultralytics state dict.

    ``prefix`` names a ``Conv`` module (``<prefix>.conv.weight``, ``<prefix>.bn.*``) when
    ``batch_norm``, else a plain ``nn.Conv2d`` (``<prefix>.weight``, ``<prefix>.bias``).
    """

    prefix: str
    batch_norm: bool


@dataclass
class Section:
    """One section to write: its name, keys in order, a comment line above it, its weights."""

    name: str
    keys: list[tuple[str, object]]
    comment: str | None = None
    weights: WeightSource | None = None

    def text(self) -> str:
        lines = [f"# {line}".rstrip() for line in self.comment.splitlines()] if self.comment else []
        lines.append(f"[{self.name}]")
        lines += [f"{key}={_value(value)}" for key, value in self.keys]
        return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass
class Emitter:
    """The sections written so far; layer ``i`` of the cfg is ``sections[i]`` (``[net]`` not
    counted).

    Layer references inside one module are written relative (negative), references to other modules'
    outputs absolute, as Darknet's own cfgs mostly do.
    """

    sections: list[Section] = field(default_factory=list)
    bn_eps: float = BN_EPS_ULTRALYTICS

    @property
    def last(self) -> int:
        return len(self.sections) - 1

    def add(self, section: Section) -> int:
        self.sections.append(section)
        return self.last

    def ref(self, layer: int, relative: bool) -> int:
        """``layer`` as the next section refers to it (negative: counted back from the next
        layer)."""
        return layer - (self.last + 1) if relative else layer

    def read_from(self, source: int, comment: str | None = None) -> str | None:
        """Make ``source`` the input of the next section: a ``[route]`` (carrying ``comment``)
        unless it is the last layer (``source`` -1 is the network input, which only the first
        layer reads).

        Returns:
            the comment still to place (None when the route took it).
        """
        if source == self.last:
            return comment
        if source < 0:
            raise ValueError("only the first layer can read the network input")
        self.add(Section("route", [("layers", source)], comment))
        return None

    def conv(self, source: int, filters: int, size: int, stride: int, prefix: str, *,
             activation: str = "swish", batch_norm: bool = True, groups: int = 1,
             comment: str | None = None) -> int:
        """One ``Conv`` (conv + BN(eps) + activation) or, without batch norm, an ``nn.Conv2d``
        with a bias."""
        comment = self.read_from(source, comment)
        keys: list[tuple[str, object]] = []
        if batch_norm:
            keys += [("batch_normalize", 1), ("bn_eps", self.bn_eps)]
        keys += [("filters", filters), ("size", size), ("stride", stride), ("pad", 1)]
        if groups > 1:
            keys.append(("groups", groups))
        keys.append(("activation", activation))
        return self.add(Section("convolutional", keys, comment, WeightSource(prefix, batch_norm)))


def emit_conv(out: Emitter, source: int, c2: int, k: int, s: int, prefix: str, groups: int,
              comment: str) -> int:
    """``Conv(c1, c2, k, s, autopad, g)``: Darknet's ``pad=1`` is ``k // 2``, autopad's value for
    odd k."""
    return out.conv(source, c2, k, s, prefix, groups=groups, comment=comment)


def emit_c2f(out: Emitter, source: int, c2: int, n: int, shortcut: bool, groups: int, e: float,
             prefix: str, comment: str) -> int:
    """``C2f``: ``y = cv1(x).chunk(2, 1); y += [m_i(y[-1])]; cv2(cat(y))`` (``block.py: C2f``) with
    ``Bottleneck(c, c, shortcut, g, k=(3, 3), e=1.0)``: ``x + cv2(cv1(x))`` when shortcut."""
    c = int(c2 * e)
    cv1 = out.conv(source, 2 * c, 1, 1, f"{prefix}.cv1", comment=comment)
    out.add(Section("route", [("layers", out.ref(cv1, True)), ("groups", 2), ("group_id", 1)]))
    block_outputs = []
    for j in range(n):
        block_in = out.last
        out.conv(block_in, c, 3, 1, f"{prefix}.m.{j}.cv1")
        last = out.conv(out.last, c, 3, 1, f"{prefix}.m.{j}.cv2", groups=groups)
        if shortcut:  # Bottleneck.add = shortcut and c1 == c2 (always equal here)
            last = out.add(Section("shortcut", [("from", out.ref(block_in, True)),
                                                ("activation", "linear")]))
        block_outputs.append(last)
    out.add(Section("route", [("layers", [out.ref(i, True) for i in (cv1, *block_outputs)])]))
    return out.conv(out.last, c2, 1, 1, f"{prefix}.cv2")


def emit_sppf(out: Emitter, source: int, c1: int, c2: int, k: int, n: int, shortcut: bool,
              legacy: bool, prefix: str, comment: str) -> int:
    """``SPPF``: ``cv1`` 1x1 to ``c1 // 2`` (SiLU for legacy rows, ``parse_model``; else none),
    ``n`` chained ``MaxPool2d(k, 1, k // 2)``, concatenate, ``cv2`` 1x1; plus the input when
    shortcut and ``c1 == c2`` (``block.py: SPPF``)."""
    cv1 = out.conv(source, c1 // 2, 1, 1, f"{prefix}.cv1",
                   activation="swish" if legacy else "linear", comment=comment)
    for _ in range(n):
        out.add(Section("maxpool", [("size", k), ("stride", 1)]))
    out.add(Section("route", [("layers", [out.ref(i, True) for i in range(cv1, cv1 + n + 1)])]))
    last = out.conv(out.last, c2, 1, 1, f"{prefix}.cv2")
    if shortcut and c1 == c2:
        last = out.add(Section("shortcut", [("from", source), ("activation", "linear")]))
    return last


def emit_upsample(out: Emitter, source: int, scale: int, comment: str) -> int:
    """``nn.Upsample(None, scale, 'nearest')``."""
    comment = out.read_from(source, comment)
    return out.add(Section("upsample", [("stride", scale)], comment))


def emit_concat(out: Emitter, sources: Sequence[int], comment: str) -> int:
    """``Concat(1)``: channels of every source, in order."""
    return out.add(Section("route", [("layers", list(sources))], comment))


def detect_channels(ch0: int, nc: int, reg_max: int) -> tuple[int, int]:
    """``Detect.__init__``: box branch ``c2 = max(16, ch[0] // 4, 4 * reg_max)``, class branch
    ``c3 = max(ch[0], min(nc, 100))``."""
    return max(16, ch0 // 4, 4 * reg_max), max(ch0, min(nc, 100))


def emit_detect(out: Emitter, sources: Sequence[int], channels: Sequence[int], nc: int,
                reg_max: int, prefix: str, comment: str) -> int:
    """``Detect`` (legacy branches): per level ``cv2[i]`` (box) and ``cv3[i]`` (class), their logits
    concatenated box first; then the ``[yolov8]`` head reading the levels."""
    c2, c3 = detect_channels(channels[0], nc, reg_max)
    levels = []
    for i, source in enumerate(sources):
        note = f"{comment}, level {i}: box branch (cv2.{i})"
        out.conv(source, c2, 3, 1, f"{prefix}.cv2.{i}.0", comment=note)
        out.conv(out.last, c2, 3, 1, f"{prefix}.cv2.{i}.1")
        box = out.conv(out.last, 4 * reg_max, 1, 1, f"{prefix}.cv2.{i}.2", activation="linear",
                       batch_norm=False)
        out.conv(source, c3, 3, 1, f"{prefix}.cv3.{i}.0",
                 comment=f"level {i}: class branch (cv3.{i})")
        out.conv(out.last, c3, 3, 1, f"{prefix}.cv3.{i}.1")
        cls = out.conv(out.last, nc, 1, 1, f"{prefix}.cv3.{i}.2", activation="linear",
                       batch_norm=False)
        keys: list[tuple[str, object]] = [("layers", [out.ref(box, True), out.ref(cls, True)])]
        note = f"level {i}: box logits ({4 * reg_max}), then class logits ({nc})"
        levels.append(out.add(Section("route", keys, note)))
    return out.add(Section("yolov8", [("layers", levels), ("classes", nc), ("reg_max", reg_max)],
                           "the YOLOv8 head: DFL boxes and sigmoid classes per level"))

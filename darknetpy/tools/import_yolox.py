"""``darknetpy import-yolox``: a YOLOX checkpoint (Megvii-BaseDetection/YOLOX) as a cfg +
``.weights``.

The network is YOLOX written in Darknet sections (:mod:`darknetpy.tools.yolox_cfg`); every
``[convolutional]`` takes one YOLOX conv (+ batch norm) unchanged, except the stem, whose weights
are rearranged so the imported network computes exactly what YOLOX computes (up to float rounding):

* **Focus -> [reorg3d].** YOLOX's ``Focus`` concatenates the pixel blocks (dy, dx) in the order
  (0,0), (1,0), (0,1), (1,1), i.e. block ``dy + 2·dx``; Darknet's ``[reorg3d] stride=2`` puts block
  (dy, dx) at ``2·dy + dx``. The two differ by a channel permutation (blocks 1 and 2 swap), folded
  into the input channels of the stem conv: exact.
* **0-255 -> [0, 1].** YOLOX takes raw pixel values; darknetpy networks take [0, 1]. The stem conv
  has no bias and is followed by batch norm, so multiplying its weights by 255 makes
  ``net(x / 255) == yolox(x)`` (one float32 rounding per weight).
* **Channel order.** By default (``input_order="rgb"``) the imported network, fed the array YOLOX
  was fed divided by 255, computes what YOLOX computes: no channel is moved. YOLOX's own released
  checkpoints were trained on OpenCV's BGR images while darknetpy reads images as RGB: with
  ``input_order="bgr"`` the colour channels of the stem are reversed, so the imported network, fed
  darknetpy's RGB, computes what YOLOX computes on the same photo in BGR.
* **Batch-norm eps** is not in a state dict. YOLOX's exps build models through ``init_yolo``
  (eps 1e-3), and the trainer saves them as ``{"model": state_dict, ...}``
  (``yolox/core/trainer.py: save_ckpt``); a bare state dict of a model built directly
  (``YOLOX(backbone, head)``) has ``BaseConv``'s ``nn.BatchNorm2d`` default, 1e-5. With
  ``bn_eps=None`` the importer takes 1e-3 for the checkpoint form and 1e-5 for a bare state dict
  (:func:`default_bn_eps`); pass ``bn_eps`` to choose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..errors import WeightsError
from ..model.network import Network
from ..model.weights import WeightsHeader, write_weights
from .yolox_cfg import BN_EPS, YOLOX_SIZES, YoloxLayout, yolox_layout

__all__ = ["fold_focus_stem", "guess_yolox_flags", "import_yolox", "read_yolox_state",
           "read_yolox_checkpoint", "default_bn_eps", "write_yolox"]

INPUT_ORDERS = ("bgr", "rgb")
STEM_KEY = "backbone.backbone.stem.conv.conv.weight"
# Bottleneck count of CSPDarknet's dark2 -> YOLOX's depth (exps/default/yolox_*.py).
DEPTHS = {1: 0.33, 2: 0.67, 3: 1.0, 4: 1.33}


def read_yolox_state(state: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A YOLOX state dict from a checkpoint file or mapping (see :func:`read_yolox_checkpoint`)."""
    return read_yolox_checkpoint(state)[0]


def default_bn_eps(is_training_checkpoint: bool) -> float:
    """The batch-norm eps of a YOLOX model saved in this form (see the module doc): 1e-3 for the
    trainer's ``{"model": ...}`` checkpoints (``yolox/models/yolo_head.py``/exps ``init_yolo``),
    PyTorch's 1e-5 for a bare state dict."""
    return BN_EPS if is_training_checkpoint else 1e-5


def read_yolox_checkpoint(state: str | Path | Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """A YOLOX state dict from a checkpoint file or mapping, and whether it came wrapped as
    YOLOX's trainer saves it (``{"model": state_dict, ...}``).

    Accepts YOLOX's training checkpoints (``{"model": state_dict, "optimizer": ..., ...}``,
    ``yolox/core/trainer.py: save_ckpt``) and plain state dicts; a DataParallel ``module.`` prefix
    is dropped, and so are the batch norms' ``num_batches_tracked`` counters.

    Raises:
        WeightsError: the file cannot be read or holds no state dict.
    """
    where = str(state) if isinstance(state, (str, Path)) else "<state dict>"
    if isinstance(state, (str, Path)):
        try:
            loaded = torch.load(state, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WeightsError(f"{where}: no such file") from None
        except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{where}: not a readable PyTorch checkpoint ({first[:160]}); "
                               "save the model's state_dict() with torch.save") from None
    else:
        loaded = state
    wrapped = isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping)
    if wrapped:
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsError(f"{where}: expected a YOLOX checkpoint {{'model': state_dict, ...}} or "
                           "a state dict of tensors")
    out = {}
    for key, value in loaded.items():
        key = key.removeprefix("module.")
        if not key.endswith(".num_batches_tracked"):
            out[key] = value
    return out, wrapped


def guess_yolox_flags(state: Mapping[str, Tensor]) -> str | None:
    """The ``--depth --width --classes [--depthwise]`` a YOLOX state dict was built with, as
    command-line flags; None when it does not look like YOLOX."""
    stem = state.get(STEM_KEY)
    cls = state.get("head.cls_preds.0.weight")
    if stem is None or cls is None or stem.dim() != 4:
        return None
    blocks = {int(m.group(1)) for key in state
              if (m := re.match(r"backbone\.backbone\.dark2\.1\.m\.(\d+)\.", key))}
    n = len(blocks)
    depth = DEPTHS.get(n, round(n / 3, 2))
    width = int(stem.shape[0]) / 64
    flags = f"--depth {depth:g} --width {width:g} --classes {int(cls.shape[0])}"
    if "backbone.backbone.dark2.0.dconv.conv.weight" in state:
        flags += " --depthwise"
    return flags


def _flags(depth: float, width: float, classes: int, depthwise: bool) -> str:
    return (f"--depth {depth:g} --width {width:g} --classes {classes}"
            f"{' --depthwise' if depthwise else ''}")


def check_yolox_state(state: Mapping[str, Tensor], layout: YoloxLayout, flags: str,
                      where: str) -> None:
    """Every key the layout needs is in ``state`` with its shape, and nothing else is.

    Raises:
        WeightsError: one line naming the first key that does not fit, the expected and found
            shapes, and the flags the state dict looks like it needs.
    """
    guess = guess_yolox_flags(state)
    if guess is None:
        hint = f"; it does not look like YOLOX (no {STEM_KEY} / head.cls_preds.0.weight)"
    elif guess != flags:
        hint = f"; the state dict looks like {guess}"
    else:
        hint = ""
    expected: dict[str, tuple[int, ...]] = {}
    for _, source in layout.convs:
        expected.update(source.shapes())
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{where}: {key} is missing (expected {shape} for {flags}){hint}")
        found = tuple(state[key].shape)
        if found != shape:
            raise WeightsError(f"{where}: {key}: expected {shape} for {flags}, found {found}{hint}")
    for key in state:
        if key not in expected:
            raise WeightsError(f"{where}: {key} {tuple(state[key].shape)} is not part of YOLOX "
                               f"with {flags}{hint}")


def fold_focus_stem(weight: Tensor, input_order: str = "rgb") -> Tensor:
    """YOLOX's Focus conv weight (out, 4·C, k, k) as the conv after ``[reorg3d] stride=2`` needs it,
    fed [0, 1] instead of 0-255 (``network_blocks.py: Focus``; ``reorg_cpu``, see the module doc).

    Focus's input channel ``(dy + 2·dx)·C + c`` becomes ``(2·dy + dx)·C + c'``, ``c' = C-1-c``
    with ``input_order="bgr"``, and the weights are multiplied by 255.
    """
    if input_order not in INPUT_ORDERS:
        raise WeightsError(f"input_order={input_order!r} is not one of {', '.join(INPUT_ORDERS)}")
    out, channels4, kh, kw = weight.shape
    c = channels4 // 4
    blocks = weight.double().reshape(out, 2, 2, c, kh, kw)  # (dx, dy): Focus block dy + 2·dx
    blocks = blocks.transpose(1, 2)  # (dy, dx): reorg3d block 2·dy + dx
    if input_order == "bgr":
        blocks = blocks.flip(3)
    return (blocks.reshape(out, channels4, kh, kw) * 255.0).to(weight.dtype).contiguous()


def default_size(depth: float, width: float, depthwise: bool) -> int:
    """The input size of the YOLOX exp with these multipliers (416 for nano/tiny), else 640."""
    for known in YOLOX_SIZES.values():
        if (known.depth, known.width, known.depthwise) == (depth, width, depthwise):
            return known.size
    return 640


def import_yolox(state: str | Path | Mapping[str, Tensor], depth: float, width: float,
                 classes: int, depthwise: bool = False, act: str = "silu", *,
                 size: int | None = None, input_order: str = "rgb", bn_eps: float | None = None,
                 net: Mapping[str, object] | None = None) -> tuple[str, dict[str, Tensor]]:
    """A YOLOX model as Darknet cfg text and darknetpy tensors.

    Args:
        state: a YOLOX checkpoint file or mapping (see :func:`read_yolox_state`).
        depth, width, classes, depthwise, act: the YOLOX exp's ``depth``, ``width``,
            ``num_classes``, depthwise flag (nano) and ``act``.
        size: the cfg's input size (default: the exp's, see :func:`default_size`).
        input_order: the channel order the model was trained on (see the module doc).
        bn_eps: the batch norms' eps, which a state dict does not hold; None: by the form the
            state was saved in (:func:`default_bn_eps`).
        net: extra ``[net]`` keys for the cfg.

    Returns:
        the cfg text and ``{darknetpy state-dict key: tensor}`` for every ``[convolutional]``
        (``layers.{i}.conv.weight``, ``layers.{i}.bn.*`` or ``layers.{i}.conv.bias``); load them
        with :func:`build_imported`.

    Raises:
        WeightsError: the state dict does not fit these flags (the message suggests the right ones).
    """
    where = str(state) if isinstance(state, (str, Path)) else "<state dict>"
    tensors_in, wrapped = read_yolox_checkpoint(state)
    if bn_eps is None:
        bn_eps = default_bn_eps(wrapped)
    layout = yolox_layout(depth, width, classes, depthwise, act,
                          size=size or default_size(depth, width, depthwise), net=net,
                          bn_eps=bn_eps)
    check_yolox_state(tensors_in, layout, _flags(depth, width, classes, depthwise), where)
    tensors: dict[str, Tensor] = {}
    for index, source in layout.convs:
        p, key = source.prefix, f"layers.{index}"
        if source.batch_normalize:
            tensors[f"{key}.conv.weight"] = tensors_in[f"{p}.conv.weight"]
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensors[f"{key}.bn.{name}"] = tensors_in[f"{p}.bn.{name}"]
        else:
            tensors[f"{key}.conv.weight"] = tensors_in[f"{p}.weight"]
            tensors[f"{key}.conv.bias"] = tensors_in[f"{p}.bias"]
    stem = f"layers.{layout.stem}.conv.weight"
    tensors[stem] = fold_focus_stem(tensors[stem], input_order)
    return layout.cfg_text, {k: v.detach().float().contiguous() for k, v in tensors.items()}


def build_imported(cfg_text: str, tensors: Mapping[str, Tensor], *,
                   path: str | Path = "<yolox>") -> Network:
    """The network of ``cfg_text`` holding ``tensors`` (from :func:`import_yolox`)."""
    network = Network.from_text(cfg_text, path=path)
    missing, unexpected = network.load_state_dict(dict(tensors), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # a darknetpy bug: the layout and the cfg disagree
        raise AssertionError(f"import_yolox: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return network


def write_yolox(state: str | Path | Mapping[str, Tensor], out_cfg: str | Path,
                out_weights: str | Path, depth: float, width: float, classes: int,
                depthwise: bool = False, act: str = "silu", *, size: int | None = None,
                input_order: str = "rgb", bn_eps: float | None = None) -> Network:
    """:func:`import_yolox`, then write the cfg and the ``.weights`` file (header 0.2.5, seen 0).

    Raises:
        WeightsError: as :func:`import_yolox`, or an output that is the input file.
    """
    for out in (out_cfg, out_weights):
        if isinstance(state, (str, Path)) and Path(out).resolve() == Path(state).resolve():
            raise WeightsError(f"{out}: refusing to overwrite the input checkpoint; "
                               "choose another name")
    cfg_text, tensors = import_yolox(state, depth, width, classes, depthwise, act, size=size,
                                     input_order=input_order, bn_eps=bn_eps)
    network = build_imported(cfg_text, tensors, path=out_cfg)
    Path(out_cfg).parent.mkdir(parents=True, exist_ok=True)
    Path(out_cfg).write_text(cfg_text)
    write_weights(out_weights, network, WeightsHeader())
    return network

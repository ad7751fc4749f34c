"""``darknetpy convert`` (``.weights`` <-> ``.pt``) and ``darknetpy partial`` (darknet's ``partial``).

The ``.pt`` format itself is :mod:`darknetpy.model.pt_checkpoint`; converting back writes the network through
:func:`darknetpy.model.weights.write_weights` with the stored header, so ``.weights -> .pt -> .weights`` is
byte-identical (``parser.c: save_weights``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsError
from ..model.network import build_network
from ..model.pt_checkpoint import network_from_checkpoint, save_pt_checkpoint
from ..model.weights import WeightsHeader, read_weights, write_weights

__all__ = ["checkpoint_to_weights", "partial", "weights_to_checkpoint"]


def weights_to_checkpoint(cfg: str | Path, weights: str | Path, out: str | Path) -> Path:
    """``darknetpy convert CFG WEIGHTS out.pt``: a ``.weights`` file to a self-contained checkpoint.

    A partial file (one ending between two layers, as darknet's ``partial`` writes) is accepted;
    the checkpoint records how many layers it held, so converting back reproduces it.

    Raises:
        WeightsError: ``out`` is one of the inputs, or the weights do not fit the cfg.
    """
    _refuse_same(out, cfg, weights)
    network = build_network(cfg, quiet=True)
    header = read_weights(weights, network, partial=True)
    return save_pt_checkpoint(network, out, header, network.loaded_layers)


def checkpoint_to_weights(
    checkpoint: str | Path, out: str | Path, cfg: str | Path | None = None
) -> Path:
    """``darknetpy convert [CFG] model.pt out.weights``: back to darknet's format, header as read.

    Raises:
        WeightsError: ``out`` is one of the inputs, or the checkpoint does not fit ``cfg``.
    """
    _refuse_same(out, cfg, checkpoint)
    network = network_from_checkpoint(checkpoint, cfg, partial=True)
    network.save_weights(out, upto=network.loaded_layers)
    return Path(out)


def _refuse_same(out: str | Path, *inputs: str | Path | None) -> None:
    for path in inputs:
        if path is not None and Path(path).exists() and Path(out).resolve() == Path(path).resolve():
            raise WeightsError(
                f"{out}: refusing to overwrite an input file; choose another output name"
            )



def partial(cfg: str | Path, weights: str | Path, out: str | Path, upto: int) -> WeightsHeader:
    """Darknet's ``partial``: layers ``0..upto-1`` of ``weights`` into ``out``, header 0.2.5, seen 0.

    Raises:
        WeightsError: if ``out`` is the input file, or the input does not fit the cfg.
    """
    for source in (weights, cfg):
        if Path(out).resolve() == Path(source).resolve():
            raise WeightsError(f"{out}: refusing to overwrite an input file ({source}); choose another name")
    network = build_network(cfg, quiet=True)
    if not 0 < upto <= len(network.layers):
        raise WeightsError(f"partial: N={upto} must be between 1 and {len(network.layers)} for {cfg}")
    read_weights(weights, network, upto=upto, partial=True)
    header = WeightsHeader(0, 2, 5, 0)
    write_weights(out, network, header, upto=upto)
    return header

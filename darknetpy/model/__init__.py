"""The model (rank 1): cfg syntax (:mod:`.cfg`), ``[net]`` meaning (:mod:`.netconfig`), the plain layers
(:mod:`.layers`), the detection heads (:mod:`.heads`), the network graph (:mod:`.network`), ``.weights`` I/O
(:mod:`.weights`), the packed convolutions (:mod:`.fastconv`) and box geometry (:mod:`.boxes`).

Nothing is imported here: ``import darknetpy.model.cfg`` (what the data stage does for ``.data`` files) loads
the cfg lexer only, not PyTorch.
"""

"""Inference (rank 2): decoding heads' outputs and NMS (:mod:`.postprocess`), the fast inference model
(:mod:`.inference_model`), ONNX export (:mod:`.export`) and the ``detect`` runner (:mod:`.detect_run`;
its inputs are :mod:`.sources`, what it prints, draws and writes per image :mod:`.darknet_output`)."""

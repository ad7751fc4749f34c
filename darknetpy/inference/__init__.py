"""Inference (rank 2): the one image -> detections pipeline (:mod:`.pipeline`; predict's records in
:mod:`.records`), decoding heads' outputs and NMS (:mod:`.postprocess`), the fast inference model
(:mod:`.inference_model`), ONNX export (:mod:`.export`) and the ``detect`` runner (:mod:`.detect_run`;
its inputs are :mod:`.sources`, what it prints, draws and writes per image :mod:`.darknet_output`)."""

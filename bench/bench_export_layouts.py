"""Each ONNX export layout against darknetpy's PyTorch decode: the largest box difference relative
to the input size (per unit of box size where a random-weight box is larger than the image) and
the largest score difference, in onnxruntime and OpenCV DNN; for ``nms``, the rows matched with
darknetpy's own NMS (issue 15, Done-when 5).

    python3 bench/bench_export_layouts.py [NAME ...]   # golden networks; default: a few
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.inference.test_export_layouts import (  # noqa: E402
    _box_error,
    _darknetpy_rows,
    _golden,
    _reference,
    _run,
    _same_detections,
)

from darknetpy.inference.export import NmsOptions, export_onnx  # noqa: E402


def main() -> None:
    import cv2

    names = sys.argv[1:] or ["yolov2-tiny", "yolov3-tiny", "yolov4-tiny", "trained-raccoon"]
    print("| network | layout | runtime | max box diff / input size | max score diff |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            net, x = _golden(name)
            boxes, objectness, scores = _reference(net, x)
            w, h = x.shape[3], x.shape[2]
            scale = np.array([w, h, w, h], np.float32)
            for layout in ("decoded", "decoded-t"):
                path = export_onnx(net, Path(tmp) / f"{name}-{layout}.onnx", layout=layout)
                cv_net = cv2.dnn.readNetFromONNX(str(path))
                cv_net.setInput(x)
                for runtime, got in (("onnxruntime", _run(path, x)), ("opencv", cv_net.forward())):
                    if layout == "decoded-t":
                        got = got.transpose(0, 2, 1)
                        b, s = got[..., :4] / scale, got[..., 4:]
                    else:
                        b, s = got[..., :4], np.concatenate([got[..., 4:5], got[..., 5:]], -1)
                    want_s = scores if layout == "decoded-t" else np.concatenate(
                        [objectness[..., None], scores], -1)
                    print(f"| {name} | {layout} | {runtime} | {_box_error(b, boxes):.2e} | "
                          f"{np.abs(s - want_s).max():.2e} |")
            thresh = 0.05 if name == "trained-raccoon" else 0.5
            plain, _ = _golden(name, plain_nms=True)
            path = export_onnx(plain, Path(tmp) / f"{name}-nms.onnx", layout="nms",
                               nms=NmsOptions(0.45, thresh, max_det=1000))
            got = _run(path, x)
            want = _darknetpy_rows(plain, x, thresh, 0.45)
            _same_detections(got[:, 1:].astype(np.float64), want, float(w), thresh)
            print(f"| {name} | nms (IoU 0.45, score {thresh}) | onnxruntime | {len(got)} rows, "
                  f"darknetpy {len(want)}: same detections | - |")


if __name__ == "__main__":
    main()

"""darknetpy: a Darknet-compatible configuration interpreter and trainer in PyTorch."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="darknetpy",
    version="0.1.0",
    description="Darknet .cfg/.weights in PyTorch: bit-exact weights, forward parity, Darknet-style training",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["darknetpy", "darknetpy.*"]),
    package_data={"darknetpy": ["py.typed"]},
    install_requires=[
        # torch: install torch==2.13.0 first (a bare `torch` requirement pulls CUDA wheels); any 2.x works.
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python>=4.8",
        "pycocotools>=2.0.7",
        "numba>=0.58",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],
        # --backend openvino (darknetpy.inference.backends); onnxruntime comes with "onnx";
        # nncf and onnx: INT8 quantization (export --int8, map --int8; darknetpy.inference.quantize)
        "openvino": ["openvino>=2024", "nncf>=2.10", "onnx>=1.14"],
    },
    entry_points={"console_scripts": ["darknetpy=darknetpy.cli:main"]},
)

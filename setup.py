"""Packaging for paddle_quant. Runtime dependencies are kept to Paddle, numpy, pydantic and tqdm."""

from pathlib import Path

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "paddlepaddle>=3.3,<3.4",
    "numpy",
    "pydantic>=2",
    "tqdm",
    # the command line: hardened XML config files, YAML config files, calibration images
    "defusedxml",
    "PyYAML",
    "Pillow",
]

EXTRAS_REQUIRE = {
    # PaddleSlim is a test oracle only (differential tests); six, requests and decorator are
    # imports of paddleslim 2.6.0 that it does not declare. paddleslim pins opencv-python
    # 4.6.0.66, built for numpy 1 (it only prints an ABI warning under numpy 2); numpy>=2
    # keeps the test environment on the numpy the library targets.
    "test": [
        "pytest",
        "hypothesis",
        "scikit-learn",
        "paddleslim==2.6.0",
        "six",
        "requests",
        "decorator",
        "numpy>=2",
        "onnx>=1.16",
        "onnxruntime>=1.17",
        "matplotlib",
    ],
    "onnx": ["onnx>=1.16", "onnxruntime>=1.17"],
    "report": ["matplotlib"],
    "demo": ["scikit-learn"],
}

setup(
    name="paddle_quant",
    version="0.1.0",
    description=(
        "Quantization (QAT, PTQ, embedding) for PaddlePaddle legacy static Programs "
        "with PaddleSlim's public API"
    ),
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["paddle_quant", "paddle_quant.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["paddle-quant=paddle_quant.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

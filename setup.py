"""ddqn: distributed deep Q-learning (Ong, Chavez, Hong 2015) on Spark and real Caffe."""
from setuptools import find_packages, setup

setup(
    name="ddqn",
    version="0.1.0",
    description="Distributed deep Q-learning on Spark and Caffe: DQN learns Snake and Atari games from pixels",
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["ddqn", "ddqn.*"]),
    package_data={"ddqn": ["prototxt/*.prototxt", "configs/*.yaml",  # the shipped nets, solvers and configs
                           "net/caffe_patches/*.patch"]},    # patches the Caffe build applies
    install_requires=[
        "numpy>=2.0,<3",
        "protobuf>=5",
        "six",             # pycaffe imports it
        "scikit-image",    # pycaffe's caffe.io imports it
        "PyYAML>=6",
        "lmdb>=1.4",
        "gymnasium>=1.0",
        "ale-py>=0.12,<0.13",             # Atari games (ALE); 0.12 ships the ROMs
        "opencv-python-headless>=4.8",    # Gymnasium's AtariPreprocessing resizes frames with cv2
        "tqdm>=4.60",
        "matplotlib>=3.8",
        "imageio>=2.30",
        "tensorboardX>=2.6",
        "pyspark==4.3.0",
        "pyzmq>=26",
        "cryptography>=42",
        "numba>=0.61",                     # 0.61 is the first with Python 3.13 wheels
    ],
    extras_require={"dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff==0.17.6"]},
    entry_points={"console_scripts": ["ddqn=ddqn.cli:main"]},
)

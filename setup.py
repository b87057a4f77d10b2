"""ament_python package definition; also installable with plain pip (see README)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mtl_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mtl_perception maintainers",
    maintainer_email="maintainers@mtl-perception.invalid",
    description="Multi-task semantic segmentation and object detection for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "perception_node = mtl_perception.ros.node:main",
            "mtl-bag = mtl_perception.ros.bag_cli:main",
            "mtl-train = mtl_perception.training.cli:main",
            "mtl-eval = mtl_perception.evaluation.evaluate:main",
            "mtl-export = mtl_perception.inference.export:main",
        ],
    },
)
